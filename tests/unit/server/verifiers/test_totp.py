"""TOTP verification (server.services.verifiers.otp.verify_totp): RFC 6238 Appendix B values,
the delay step, drift learning, one acceptance per window and blocking after wrong codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.protocol.otp import HashAlg, totp
from firmware_sim.tokens.otp_token import Model, OtpGenerator, new_state
from server.services.verifiers import (
    CodeReplayed,
    CredentialBlocked,
    MalformedCode,
    TotpPolicy,
    TotpState,
    WrongCode,
    verify_totp,
)

VECTORS = Path(__file__).parents[3] / "vectors"
RFC6238 = json.loads((VECTORS / "rfc6238.json").read_text())
SECRET = b"12345678901234567890"
NOW = 1_700_000_010.0  # 10 s into a window
WINDOW = int(NOW // 30)


def _state(**changes: Any) -> TotpState:
    return TotpState(secret=SECRET, **changes)


def _code(at: float) -> str:
    return totp(SECRET, at)


@pytest.mark.parametrize("vector", RFC6238["vectors"], ids=lambda v: f"{v['mode']}-{v['time']}")
def test_rfc6238_appendix_b_code_accepted_at_its_time(vector: dict[str, Any]) -> None:
    state = TotpState(
        secret=RFC6238["secrets_ascii"][vector["mode"]].encode(),
        digits=RFC6238["digits"],
        step=RFC6238["time_step"],
        alg=HashAlg(vector["mode"]),
    )

    accepted = verify_totp(state, vector["totp"], vector["time"])

    assert accepted.last_window == int(vector["t_hex"], 16)
    assert accepted.drift_steps == 0
    assert accepted.failures == 0


@pytest.mark.parametrize("vector", RFC6238["vectors"][:3], ids=lambda v: f"{v['mode']}-{v['time']}")
def test_rfc6238_appendix_b_code_rejected_two_minutes_later(vector: dict[str, Any]) -> None:
    state = TotpState(
        secret=RFC6238["secrets_ascii"][vector["mode"]].encode(),
        digits=8,
        alg=HashAlg(vector["mode"]),
    )

    with pytest.raises(WrongCode):
        verify_totp(state, vector["totp"], vector["time"] + 120)


def test_current_code_accepted_without_drift() -> None:
    accepted = verify_totp(_state(), _code(NOW), NOW)

    assert accepted == _state(last_window=WINDOW)


def test_code_accepted_with_display_grouping_and_newline() -> None:
    code = _code(NOW)

    accepted = verify_totp(_state(), f" {code[:3]} {code[3:]}\n", NOW)

    assert accepted.last_window == WINDOW


def test_previous_window_accepted_for_delay_without_learning_drift() -> None:
    accepted = verify_totp(_state(), _code(NOW - 30), NOW)

    assert accepted.last_window == WINDOW - 1
    assert accepted.drift_steps == 0


def test_two_windows_back_rejected_without_drift() -> None:
    with pytest.raises(WrongCode) as caught:
        verify_totp(_state(), _code(NOW - 60), NOW)

    assert caught.value.state.failures == 1


def test_two_windows_back_accepted_with_learned_slow_drift() -> None:
    accepted = verify_totp(_state(drift_steps=-2), _code(NOW - 60), NOW)

    assert accepted.drift_steps == -2


def test_slow_clock_learned_when_policy_looks_behind() -> None:
    accepted = verify_totp(_state(), _code(NOW - 60), NOW, TotpPolicy(drift_behind=1))

    assert accepted.drift_steps == -2


def test_fast_display_drift_learned_and_used_for_next_code() -> None:
    clock = NOW
    token = new_state(Model.DISPLAY, drift=90.0)
    display = OtpGenerator(token, lambda _: None, clock=lambda: clock)
    state = TotpState(secret=token.secret)

    state = verify_totp(state, display.next_code(), clock)

    assert state.drift_steps == 3
    assert state.last_window == WINDOW + 3
    clock = NOW + 30
    state = verify_totp(state, display.next_code(), clock)
    assert state.last_window == WINDOW + 4
    assert state.drift_steps == 3


def test_learned_drift_moves_the_window_it_looks_in() -> None:
    # Four steps ahead is out of reach from drift 0 but within reach from a learned drift 3.
    with pytest.raises(WrongCode):
        verify_totp(_state(), _code(NOW + 120), NOW)

    accepted = verify_totp(_state(drift_steps=3), _code(NOW + 120), NOW)

    assert accepted.drift_steps == 4


def test_drift_beyond_max_drift_rejected() -> None:
    policy = TotpPolicy(drift_ahead=3, max_drift=4)

    with pytest.raises(WrongCode):
        verify_totp(_state(drift_steps=3), _code(NOW + 150), NOW, policy)


def test_narrow_policy_rejects_display_90_seconds_fast() -> None:
    with pytest.raises(WrongCode):
        verify_totp(_state(), _code(NOW + 90), NOW, TotpPolicy(drift_ahead=2))


def test_replay_rejected_in_same_window() -> None:
    state = verify_totp(_state(), _code(NOW), NOW)

    with pytest.raises(CodeReplayed) as caught:
        verify_totp(state, _code(NOW), NOW + 15)

    assert caught.value.state == state  # not counted as a wrong code


def test_replay_rejected_for_window_before_last_accepted() -> None:
    state = verify_totp(_state(), _code(NOW), NOW)

    with pytest.raises(CodeReplayed):
        verify_totp(state, _code(NOW - 30), NOW)


def test_next_window_accepted_after_replay_check() -> None:
    state = verify_totp(_state(), _code(NOW), NOW)

    accepted = verify_totp(state, _code(NOW + 30), NOW + 30)

    assert accepted.last_window == WINDOW + 1


def _wrong(at: float) -> str:
    return f"{(int(_code(at)) + 1) % 10**6:06d}"


def test_three_wrong_codes_block_the_display() -> None:
    state = _state()
    with pytest.raises(WrongCode) as first:
        verify_totp(state, _wrong(NOW), NOW)
    assert first.value.attempts_left == 2
    with pytest.raises(WrongCode) as second:
        verify_totp(first.value.state, _wrong(NOW), NOW)
    assert second.value.attempts_left == 1

    with pytest.raises(CredentialBlocked) as third:
        verify_totp(second.value.state, _wrong(NOW), NOW)

    assert third.value.state.failures == 3


def test_right_code_rejected_when_blocked() -> None:
    with pytest.raises(CredentialBlocked):
        verify_totp(_state(failures=3), _code(NOW), NOW)


def test_failures_reset_on_success() -> None:
    accepted = verify_totp(_state(failures=2), _code(NOW), NOW)

    assert accepted.failures == 0


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12345a", "١٢٣٤٥٦", "x" * 10_000])
def test_malformed_code_rejected_without_counting(code: str) -> None:
    with pytest.raises(MalformedCode) as caught:
        verify_totp(_state(failures=1), code, NOW)

    assert caught.value.state.failures == 1


def test_state_repr_hides_secret() -> None:
    assert SECRET.hex() not in repr(_state())
    assert repr(SECRET) not in repr(_state())


def test_error_carries_stable_code_and_no_submitted_code() -> None:
    wrong = _wrong(NOW)
    with pytest.raises(WrongCode) as caught:
        verify_totp(_state(), wrong, NOW)

    assert caught.value.code == "wrong-code"
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="112 bits"):
        TotpState(secret=b"short")
