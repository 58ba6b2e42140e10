"""Yubico OTP verification (server.services.verifiers.yubico): OTPs from the codec and from the
simulated token accepted once, replays and lower counters refused, other tokens' OTPs refused."""

from __future__ import annotations

import pytest

from devices.protocol.yubiotp import OtpBlock, generate_otp
from firmware_sim.tokens.otp_token import Algorithm, Model, OtpGenerator, new_state
from server.services.verifiers import (
    CodeReplayed,
    MalformedCode,
    WrongCode,
    WrongToken,
    YubicoState,
    verify_yubico,
)

KEY = bytes(range(16))
PUBLIC_ID = bytes.fromhex("000011223344")
PRIVATE_ID = bytes.fromhex("a1b2c3d4e5f6")
STATE = YubicoState(aes_key=KEY, public_id=PUBLIC_ID, private_id=PRIVATE_ID)


def _otp(
    usage: int,
    session: int,
    *,
    key: bytes = KEY,
    public_id: bytes = PUBLIC_ID,
    private_id: bytes = PRIVATE_ID,
) -> str:
    block = OtpBlock(
        private_id=private_id,
        usage_counter=usage,
        timestamp=0x123456,
        session_counter=session,
        random=0xBEEF,
    )
    return generate_otp(public_id, key, block)


def test_codec_otp_accepted_and_counters_stored() -> None:
    accepted = verify_yubico(STATE, _otp(1, 0))

    assert (accepted.usage_counter, accepted.session_counter) == (1, 0)
    assert accepted.aes_key == KEY


def test_otp_with_typed_enter_and_upper_case_accepted() -> None:
    accepted = verify_yubico(STATE, _otp(1, 0).upper() + "\n")

    assert accepted.usage_counter == 1


def test_simulated_token_otps_accepted_once_each() -> None:
    token = new_state(Model.USB, Algorithm.YUBICO)
    generator = OtpGenerator(token, lambda _: None)
    state = YubicoState(
        aes_key=token.secret, public_id=token.public_id, private_id=token.private_id
    )
    first = generator.next_code()

    state = verify_yubico(state, first)
    state = verify_yubico(state, generator.next_code())

    assert (state.usage_counter, state.session_counter) == (1, 1)
    with pytest.raises(CodeReplayed):
        verify_yubico(state, first)


def test_replay_rejected() -> None:
    state = verify_yubico(STATE, _otp(3, 7))

    with pytest.raises(CodeReplayed) as caught:
        verify_yubico(state, _otp(3, 7))

    assert caught.value.state == state
    assert caught.value.code == "code-replayed"


@pytest.mark.parametrize(("usage", "session"), [(5, 2), (4, 0xFF), (0, 0), (5, 3)])
def test_lower_or_equal_counters_rejected_as_replay_or_clone(usage: int, session: int) -> None:
    state = verify_yubico(STATE, _otp(5, 3))

    with pytest.raises(CodeReplayed):
        verify_yubico(state, _otp(usage, session))


def test_new_power_up_accepted_after_high_session_counter() -> None:
    state = verify_yubico(STATE, _otp(5, 0xFF))

    assert verify_yubico(state, _otp(6, 0)).usage_counter == 6


def test_other_tokens_otp_rejected_as_wrong_token() -> None:
    other = _otp(9, 0, key=bytes(16), public_id=bytes.fromhex("000099887766"))

    with pytest.raises(WrongToken) as caught:
        verify_yubico(STATE, other)

    assert caught.value.state == STATE


def test_other_public_id_under_same_key_rejected_as_wrong_token() -> None:
    with pytest.raises(WrongToken):
        verify_yubico(STATE, _otp(2, 0, public_id=bytes.fromhex("000099887766")))


def test_forged_otp_with_right_public_id_rejected_as_wrong_code() -> None:
    with pytest.raises(WrongCode):
        verify_yubico(STATE, _otp(2, 0, key=bytes(16)))


def test_other_private_id_rejected_as_wrong_code() -> None:
    with pytest.raises(WrongCode):
        verify_yubico(STATE, _otp(2, 0, private_id=bytes(6)))


def test_tampered_ciphertext_rejected_as_wrong_code() -> None:
    otp = _otp(2, 0)
    tampered = otp[:-1] + ("c" if otp[-1] != "c" else "b")

    with pytest.raises(WrongCode):
        verify_yubico(STATE, tampered)


@pytest.mark.parametrize("text", ["", "cccc", _otp(1, 0)[:-2], _otp(1, 0)[:-1] + "x"])
def test_malformed_otp_rejected(text: str) -> None:
    with pytest.raises(MalformedCode):
        verify_yubico(STATE, text)


def test_state_repr_hides_key_and_private_id() -> None:
    text = repr(STATE)

    assert repr(KEY) not in text
    assert repr(PRIVATE_ID) not in text
