"""Property tests: whatever text is submitted, every verifier returns a new state or raises a
``VerificationFailed`` subclass, never anything else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocol.otp import totp
from devices.protocol.yubiotp import MODHEX_ALPHABET, OtpBlock, generate_otp
from server.services.verifiers import (
    HotpState,
    KeyCard,
    TotpState,
    VerificationFailed,
    YubicoState,
    resync_hotp,
    verify_hotp,
    verify_keycard,
    verify_totp,
    verify_yubico,
)

FUZZ = settings(max_examples=200, deadline=None)
SECRET = b"12345678901234567890"
NOW = 1_700_000_010.0
PEPPER = b"server-pepper-for-tests-only-32b"
CARD = KeyCard.new("fuzz")
CARD_STATE = CARD.state(PEPPER)
YUBICO = YubicoState(aes_key=bytes(16), public_id=bytes(6), private_id=bytes(6))

S = TypeVar("S")


def _outcome(call: Callable[[], S]) -> S | VerificationFailed[Any]:
    """The new state, or the verifier's own error; anything else propagates and fails."""
    try:
        return call()
    except VerificationFailed as exc:
        return exc


digit_strings = st.text(alphabet="0123456789 ", max_size=12)
codes = st.one_of(st.text(max_size=60), digit_strings)
modhex = st.text(alphabet=MODHEX_ALPHABET + MODHEX_ALPHABET.upper(), min_size=40, max_size=48)


@FUZZ
@given(code=codes, failures=st.integers(0, 3))
def test_totp_arbitrary_code_returns_state_or_raises_verification_failed(
    code: str, failures: int
) -> None:
    state = TotpState(secret=SECRET, failures=failures, last_window=int(NOW // 30) - 1)
    result = _outcome(lambda: verify_totp(state, code, NOW))
    if isinstance(result, VerificationFailed):
        assert isinstance(result.state, TotpState)
    else:
        assert result.last_window is not None
        assert "".join(code.split()) == totp(SECRET, result.last_window * 30)
        assert result.failures == 0


@FUZZ
@given(code=codes, counter=st.integers(0, 2**64 - 1))
def test_hotp_arbitrary_code_returns_state_or_raises_verification_failed(
    code: str, counter: int
) -> None:
    state = HotpState(secret=SECRET, counter=counter)
    result = _outcome(lambda: verify_hotp(state, code))
    if isinstance(result, VerificationFailed):
        assert isinstance(result.state, HotpState)
    else:
        assert result.counter > counter


@FUZZ
@given(code1=codes, code2=codes)
def test_hotp_resync_arbitrary_codes_return_state_or_raise_verification_failed(
    code1: str, code2: str
) -> None:
    result = _outcome(lambda: resync_hotp(HotpState(secret=SECRET), code1, code2, window=10))
    if isinstance(result, VerificationFailed):
        assert isinstance(result.state, HotpState)
    else:
        assert result.counter >= 2


@FUZZ
@given(otp=st.one_of(st.text(max_size=60), modhex))
def test_yubico_arbitrary_text_returns_state_or_raises_verification_failed(otp: str) -> None:
    result = _outcome(lambda: verify_yubico(YUBICO, otp))
    if isinstance(result, VerificationFailed):
        assert result.state == YUBICO
    else:
        assert (result.usage_counter, result.session_counter) > (0, 0)


@FUZZ
@given(
    usage=st.integers(0, 0x7FFF),
    session=st.integers(0, 0xFF),
    flip=st.integers(0, 43),
)
def test_yubico_one_changed_character_never_accepted(usage: int, session: int, flip: int) -> None:
    block = OtpBlock(bytes(6), usage, 0, session, 0)
    otp = generate_otp(bytes(6), bytes(16), block)
    changed = otp[:flip] + ("c" if otp[flip] != "c" else "b") + otp[flip + 1 :]
    assert isinstance(_outcome(lambda: verify_yubico(YUBICO, changed)), VerificationFailed)


@FUZZ
@given(code=codes, position=st.integers(0, 147))
def test_keycard_arbitrary_code_returns_state_or_raises_verification_failed(
    code: str, position: int
) -> None:
    index = CARD_STATE.digests[position][0]
    result = _outcome(lambda: verify_keycard(CARD_STATE, index, code, pepper=PEPPER))
    if isinstance(result, VerificationFailed):
        assert result.state.used == CARD_STATE.used
        assert result.state.failures <= 1
    else:
        assert "".join(code.split()) == dict(CARD.pairs)[index]
        assert index in result.used
