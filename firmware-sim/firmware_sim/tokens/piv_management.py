"""Authentication with the simulated PIV card's management key (key reference 9B): the card's
witness and the host's challenge, exchanged by GENERAL AUTHENTICATE (SP 800-73-4 part 2)."""

from __future__ import annotations

import hmac
import secrets

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.protocol import tlv
from devices.protocol.piv import TAG_CHALLENGE, TAG_DYN_AUTH, TAG_RESPONSE, TAG_WITNESS, Algorithm
from devices.protocol.sw import SW


def block_encrypt(alg: Algorithm, key: bytes, block: bytes) -> bytes:
    cipher_alg = TripleDES(key) if alg is Algorithm.TDES else algorithms.AES(key)
    encryptor = Cipher(cipher_alg, modes.ECB()).encryptor()  # noqa: S305 - one block, per SP 800-73
    return encryptor.update(block) + encryptor.finalize()


class ManagementKeyAuth:
    """One card session's management-key authentication: the witness or challenge the card
    handed out and waits to see answered, and whether the host has proven the key.

    Volatile: a new session (power reset, deselect) starts unauthenticated.
    """

    def __init__(self) -> None:
        self.authenticated = False
        self._pending: tuple[str, bytes] | None = None

    def step(self, algorithm: Algorithm, key: bytes, fields: dict[int, bytes]) -> tuple[bytes, int]:
        """Answer one GENERAL AUTHENTICATE for key 9B. Any step starts over: what was pending
        is used at most once, and authentication is lost until this step succeeds."""
        size = algorithm.block_size
        pending, self._pending = self._pending, None
        self.authenticated = False

        def encrypt(block: bytes) -> bytes:
            return block_encrypt(algorithm, key, block)

        if fields == {TAG_WITNESS: b""}:
            witness = secrets.token_bytes(size)
            self._pending = ("witness", witness)
            return tlv.encode_tlv(
                TAG_DYN_AUTH, tlv.encode_tlv(TAG_WITNESS, encrypt(witness))
            ), SW.SUCCESS
        if set(fields) == {TAG_WITNESS, TAG_CHALLENGE} and fields[TAG_CHALLENGE]:
            if pending is None or pending[0] != "witness":
                return b"", SW.CONDITIONS_NOT_SATISFIED
            if len(fields[TAG_CHALLENGE]) != size or len(fields[TAG_WITNESS]) != size:
                return b"", SW.WRONG_DATA
            if not hmac.compare_digest(fields[TAG_WITNESS], pending[1]):
                return b"", SW.SECURITY_STATUS_NOT_SATISFIED
            self.authenticated = True
            answer = tlv.encode_tlv(TAG_RESPONSE, encrypt(fields[TAG_CHALLENGE]))
            return tlv.encode_tlv(TAG_DYN_AUTH, answer), SW.SUCCESS
        if fields == {TAG_CHALLENGE: b""}:
            challenge = secrets.token_bytes(size)
            self._pending = ("challenge", challenge)
            return tlv.encode_tlv(
                TAG_DYN_AUTH, tlv.encode_tlv(TAG_CHALLENGE, challenge)
            ), SW.SUCCESS
        if set(fields) == {TAG_RESPONSE} and fields[TAG_RESPONSE]:
            if pending is None or pending[0] != "challenge":
                return b"", SW.CONDITIONS_NOT_SATISFIED
            if not hmac.compare_digest(fields[TAG_RESPONSE], encrypt(pending[1])):
                return b"", SW.SECURITY_STATUS_NOT_SATISFIED
            self.authenticated = True
            return b"", SW.SUCCESS
        return b"", SW.WRONG_DATA
