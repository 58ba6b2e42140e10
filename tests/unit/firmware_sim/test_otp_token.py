"""The OTP tokens' shared firmware: codes, counters saved before a code leaves, PSKC output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devices.protocol import otp, pskc, yubiotp
from firmware_sim.state import StateError
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Algorithm, Model


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, model: Model, algorithm: Algorithm | None = None, **kw: object) -> Path:
    path = tmp_path / f"{model.value}.json"
    otp_token.create(path, otp_token.new_state(model, algorithm, **kw))  # type: ignore[arg-type]
    return path


def test_display_shows_totp_of_its_own_clock_including_drift(tmp_path: Path) -> None:
    path = make(tmp_path, Model.DISPLAY, drift=90.0)
    clock = FixedClock(1_700_000_000.0)
    generator = otp_token.load_generator(path, Model.DISPLAY, clock=clock)
    token = generator.token
    assert generator.next_code() == otp.totp(token.secret, clock.now + 90.0)
    assert otp_token.load_state(path).drift == 90.0


def test_totp_code_changes_with_the_time_step(tmp_path: Path) -> None:
    path = make(tmp_path, Model.DISPLAY)
    clock = FixedClock(59.0)
    generator = otp_token.load_generator(path, clock=clock)
    first = generator.next_code()
    clock.now = 61.0
    assert generator.next_code() == otp.totp(generator.token.secret, 61.0)
    assert len(first) == 6


def test_hotp_counter_is_saved_before_the_code_is_shown(tmp_path: Path) -> None:
    path = make(tmp_path, Model.DISPLAY, Algorithm.HOTP, digits=8)
    generator = otp_token.load_generator(path)
    secret = generator.token.secret
    codes = [generator.next_code() for _ in range(3)]
    assert codes == [otp.hotp(secret, counter, digits=8) for counter in range(3)]
    assert otp_token.load_state(path).counter == 3
    # A new power-up continues where the saved counter says.
    assert otp_token.load_generator(path).next_code() == otp.hotp(secret, 3, digits=8)


def test_yubico_otp_counters_follow_power_ups_and_sessions(tmp_path: Path) -> None:
    path = make(tmp_path, Model.USB)
    generator = otp_token.load_generator(path, Model.USB)
    token = generator.token
    first = yubiotp.parse_otp(generator.next_code(), token.secret)
    second = yubiotp.parse_otp(generator.next_code(), token.secret)
    assert first.public_id == token.public_id
    assert first.block.private_id == token.private_id
    assert (first.block.usage_counter, first.block.session_counter) == (1, 0)
    assert (second.block.usage_counter, second.block.session_counter) == (1, 1)
    assert otp_token.load_state(path).counter == 1
    again = otp_token.load_generator(path, Model.USB)
    third = yubiotp.parse_otp(again.next_code(), token.secret)
    assert (third.block.usage_counter, third.block.session_counter) == (2, 0)


def test_pskc_output_carries_what_a_service_needs(tmp_path: Path) -> None:
    path = make(tmp_path, Model.DISPLAY)
    token = otp_token.load_state(path)
    keys = pskc.parse_pskc(pskc.write_pskc([token.pskc_key()]))
    assert len(keys) == 1
    key = keys[0]
    assert key.serial == token.serial
    assert key.algorithm == pskc.ALG_TOTP
    assert key.secret == token.secret
    assert (key.digits, key.time_step) == (6, 30)


def test_yubico_pskc_carries_ids(tmp_path: Path) -> None:
    token = otp_token.load_state(make(tmp_path, Model.NFC))
    key = pskc.parse_pskc(pskc.write_pskc([token.pskc_key()]))[0]
    assert key.algorithm == pskc.ALG_YUBICO_OTP
    assert key.public_id == yubiotp.modhex_encode(token.public_id)
    assert key.private_id == token.private_id


def test_state_file_holds_model_as_kind(tmp_path: Path) -> None:
    path = make(tmp_path, Model.USB)
    assert json.loads(path.read_text())["kind"] == "otp-usb"
    with pytest.raises(StateError):
        otp_token.load_state(path, Model.DISPLAY)


@pytest.mark.parametrize(
    ("field", "value"),
    [("digits", 7), ("secret", "00"), ("counter", -1), ("time_step", 0), ("algorithm", "rot13")],
)
def test_damaged_state_is_refused_at_load(tmp_path: Path, field: str, value: object) -> None:
    path = make(tmp_path, Model.DISPLAY)
    document = json.loads(path.read_text())
    document[field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match="damaged"):
        otp_token.load_state(path)


def test_seed_has_at_least_112_bits(tmp_path: Path) -> None:
    for alg in otp.HashAlg:
        token = otp_token.new_state(Model.DISPLAY, hash_alg=alg)
        assert len(token.secret) * 8 >= 112
