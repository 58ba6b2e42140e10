"""A PIV card as the service sees it: the messages its key signs, and its credential's serial."""

from __future__ import annotations

import uuid

from cryptography import x509

from server.services.piv.ca import serial_hex

SERIAL_PREFIX = "piv:"
SLOT = "9a"
# What the card signs (its driver hashes with SHA-256 for P-256 keys, SHA-384 for P-384):
#   enrolment  ENROL_DOMAIN || state id (16 bytes) || challenge (32 bytes)
#   login      LOGIN_DOMAIN || origin length (2) || origin || transaction id (16) || challenge (32)
# The parts have fixed sizes (or a length before them), so the concatenation is unambiguous, and
# the two prefixes keep an enrolment signature from ever passing as a login signature or the
# other way round.
ENROL_DOMAIN = b"akkreditiv-piv-enrol"
LOGIN_DOMAIN = b"akkreditiv-piv-login"
CHALLENGE_SIZE = 32


def enrol_message(state_id: uuid.UUID, challenge: bytes) -> bytes:
    """What the card signs to enrol."""
    return ENROL_DOMAIN + state_id.bytes + challenge


def login_message(transaction_id: uuid.UUID, challenge: bytes, origin: str) -> bytes:
    """What the card signs to log in: bound to the login, its challenge and the origin the
    client believes it talks to (as WebAuthn's clientData binds it), so a relaying site
    cannot pass a signature made for it on to the real service."""
    encoded = origin.encode("utf-8")
    return (
        LOGIN_DOMAIN + len(encoded).to_bytes(2, "big") + encoded + transaction_id.bytes + challenge
    )


def card_serial(certificate: x509.Certificate) -> str:
    """The credential serial of a card certificate: ``"piv:"`` + its serial as 40 hex digits."""
    return SERIAL_PREFIX + serial_hex(certificate.serial_number)
