"""Decoy answers for a login whose person does not exist or lacks the factor: shaped like a
real person's, the same in every login for the same person, unlinkable without the decoy key."""

from __future__ import annotations

import hmac
import uuid

from fido2.webauthn import PublicKeyCredentialDescriptor, PublicKeyCredentialType

from server.storage.tables import AuthTransaction

# An identity id no identity has (uuid4 never makes it): lookups for a person who does not
# exist run against it, so they cost what a real person's lookup costs.
NOBODY = uuid.UUID(int=1)

# The shapes of real credential ids, (format prefix, length), the first the most common: the
# keys this service enrols (the simulated key and its model seal the private key into the id:
# a format byte 01, a 12-byte nonce, the sealed 34 bytes and a 16-byte tag), then the 64-byte
# key handles of most other hardware keys. Each decoy takes one, drawn per person.
DECOY_SHAPES: tuple[tuple[bytes, int], ...] = ((b"\x01", 63), (b"", 64))
# How many keys a person without one appears to hold, as people do: mostly one, some two, a
# few three; out of 256, the first byte of the person's decoy stream picks.
DECOY_COUNT_THRESHOLDS = (192, 243, 256)  # 1 key below 192, 2 below 243, else 3
DECOY_SHAPE_ODDS = 64  # one decoy in four looks like another maker's key


def decoy_subject(transaction: AuthTransaction) -> bytes:
    """What a login's decoy answers are derived from: the identity, so that a person without
    the factor gets the same decoy in every login, as a real key or card answers the same.

    For a person number that matches no identity, ``identify`` keeps a keyed digest of the
    number typed, so those decoys are the same in every login too; only a transaction without
    one (never identified) falls back to its own id.
    """
    if transaction.identity_id is not None:
        return b"identity:" + transaction.identity_id.bytes
    if transaction.subject_digest:
        return b"person:" + transaction.subject_digest.encode("ascii")
    return b"transaction:" + transaction.id.bytes


def decoy_descriptors(decoy_key: bytes, subject: bytes) -> list[PublicKeyCredentialDescriptor]:
    """Credential descriptors shaped like a real person's: one to three (as many as people
    hold, in about their proportions), each id of a real key's shape, all the same for the
    same ``subject`` under the same key, and unlinkable to the subject without the key."""
    drawn = hmac.digest(decoy_key, b"fido2-decoy-shape|" + subject, "sha256")
    count = 1 + next(n for n, limit in enumerate(DECOY_COUNT_THRESHOLDS) if drawn[0] < limit)
    descriptors = []
    for number in range(count):
        prefix, length = DECOY_SHAPES[0 if drawn[1 + number] >= DECOY_SHAPE_ODDS else 1]
        body = length - len(prefix)
        stream = b""
        block = 0
        while len(stream) < body:
            message = b"fido2-decoy|%d|%d|%s" % (number, block, subject)
            stream += hmac.digest(decoy_key, message, "sha256")
            block += 1
        descriptors.append(
            PublicKeyCredentialDescriptor(
                type=PublicKeyCredentialType.PUBLIC_KEY, id=prefix + stream[:body]
            )
        )
    return descriptors
