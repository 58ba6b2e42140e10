"""How a credential's secret is sealed: the ``SecretBox`` context of a credential, and the
layout of a Yubico OTP token's sealed secret."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

YUBICO_KEY_SIZE = 16
YUBICO_PRIVATE_ID_SIZE = 6


def secret_context(credential_id: uuid.UUID) -> str:
    """The ``SecretBox`` context a credential's secret is sealed under: OTP seeds, a Yubico
    token's key and private id, a password's Argon2id PHC string and a key card's digests. A
    sealed secret moved to another row does not open (and a database dump alone cannot be used
    to guess passwords offline)."""
    return f"credential:{credential_id}"


def yubico_secrets(secret: bytes, public_data: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The AES key and private id of a Yubico OTP credential, from its opened secret.

    The private id is part of what an OTP proves (it is checked inside every decrypted OTP),
    so it is kept as the key is, not in ``public_data`` for any reader of the database: the
    sealed secret is the 16-byte key followed by the 6-byte private id. A row stored before
    that holds the key alone and the private id in ``public_data`` (hex); it is still read.
    """
    if len(secret) == YUBICO_KEY_SIZE + YUBICO_PRIVATE_ID_SIZE:
        return secret[:YUBICO_KEY_SIZE], secret[YUBICO_KEY_SIZE:]
    return secret, bytes.fromhex(str(public_data["private_id"]))
