"""Yubico OTP verification for USB/NFC keyboard tokens: the token's AES key, ids and last
accepted counters in, the counters of the newly accepted OTP out."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, replace

from devices.errors import InvalidOtp, MalformedOtp
from devices.protocol.yubiotp import (
    AES_KEY_LENGTH,
    MAX_PUBLIC_ID_LENGTH,
    PRIVATE_ID_LENGTH,
    USAGE_COUNTER_MAX,
    modhex_decode,
    parse_otp,
)
from server.services.verifiers.errors import CodeReplayed, MalformedCode, WrongCode, WrongToken


@dataclass(frozen=True, slots=True)
class YubicoState:
    """A Yubico OTP credential: the token's AES-128 key, its public id (the modhex prefix it
    types), its secret private id, and the (usage, session) counters of the last accepted OTP.
    A credential that has accepted nothing yet stores (0, 0); a YubiKey's first OTP after
    programming has usage counter 1."""

    aes_key: bytes = field(repr=False)
    public_id: bytes
    private_id: bytes = field(repr=False)
    usage_counter: int = 0
    session_counter: int = 0

    def __post_init__(self) -> None:
        if len(self.aes_key) != AES_KEY_LENGTH:
            raise ValueError(f"a Yubico OTP key is {AES_KEY_LENGTH} bytes")
        if not 1 <= len(self.public_id) <= MAX_PUBLIC_ID_LENGTH:
            raise ValueError(f"a public id has 1 to {MAX_PUBLIC_ID_LENGTH} bytes")
        if len(self.private_id) != PRIVATE_ID_LENGTH:
            raise ValueError(f"a private id has {PRIVATE_ID_LENGTH} bytes")
        if not 0 <= self.usage_counter <= USAGE_COUNTER_MAX:
            raise ValueError(f"the usage counter is 0..{USAGE_COUNTER_MAX:#x}")
        if not 0 <= self.session_counter <= 0xFF:
            raise ValueError("the session counter is 0..0xff")


def verify_yubico(state: YubicoState, otp: str) -> YubicoState:
    """Check a typed Yubico OTP and return the state holding its counters.

    Raises (each error carrying ``state`` unchanged, to persist as it is):

    - ``MalformedCode``: not an OTP of this token's length, or not modhex;
    - ``WrongToken``: another token's OTP (its public id differs);
    - ``WrongCode``: the public id matches but the OTP does not decrypt under the key (the CRC
      fails) or decrypts to another private id: mistyped, forged or tampered with;
    - ``CodeReplayed``: a genuine OTP whose (usage, session) counters are not strictly above
      the last accepted pair. Either a captured OTP sent again or, when the counters are
      *lower* than ones already seen, possibly a cloned token running its own count: the caller
      should record it as a security event.

    No failure count is kept here: guessing an AES-128 block is hopeless, and the account-wide
    limit (NIST SP 800-63B: at most 100 failures in a row) belongs to the caller.
    """
    # A keyboard token ends with Enter; a paste may bring spaces.
    text = otp.strip()
    prefix_length = 2 * len(state.public_id)
    try:
        parsed = parse_otp(text, state.aes_key, public_id_length=len(state.public_id))
    except MalformedOtp:
        raise MalformedCode(state) from None
    except InvalidOtp:
        # parse_otp checked length and modhex before decrypting, so the prefix decodes.
        if not _same_public_id(state, modhex_decode(text[:prefix_length])):
            raise WrongToken(state) from None
        raise WrongCode(state) from None
    if not _same_public_id(state, parsed.public_id):
        raise WrongToken(state)
    if not hmac.compare_digest(parsed.block.private_id, state.private_id):
        raise WrongCode(state)
    seen = (state.usage_counter, state.session_counter)
    counters = (parsed.block.usage_counter, parsed.block.session_counter)
    if counters <= seen:
        raise CodeReplayed(state)
    return replace(state, usage_counter=counters[0], session_counter=counters[1])


def _same_public_id(state: YubicoState, public_id: bytes) -> bool:
    # The public id is not a secret, but comparing it in constant time costs nothing.
    return hmac.compare_digest(public_id, state.public_id)
