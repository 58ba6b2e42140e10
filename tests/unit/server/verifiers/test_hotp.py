"""HOTP verification (server.services.verifiers.otp): RFC 4226 Appendix D values, the
look-ahead window, replays and resynchronisation with two consecutive codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.protocol.otp import hotp
from firmware_sim.tokens.otp_token import Algorithm, Model, OtpGenerator, new_state
from server.services.verifiers import (
    CodeReplayed,
    CredentialBlocked,
    HotpState,
    MalformedCode,
    WrongCode,
    resync_hotp,
    verify_hotp,
)

VECTORS = Path(__file__).parents[3] / "vectors"
RFC4226 = json.loads((VECTORS / "rfc4226.json").read_text())
SECRET = RFC4226["secret_ascii"].encode()


def _state(**changes: Any) -> HotpState:
    return HotpState(secret=SECRET, **changes)


def _code(counter: int) -> str:
    return hotp(SECRET, counter)


@pytest.mark.parametrize("vector", RFC4226["vectors"], ids=lambda v: f"count{v['count']}")
def test_rfc4226_appendix_d_code_accepted_at_its_counter(vector: dict[str, Any]) -> None:
    accepted = verify_hotp(_state(counter=vector["count"]), vector["hotp"])

    assert accepted.counter == vector["count"] + 1


@pytest.mark.parametrize("vector", RFC4226["vectors"], ids=lambda v: f"count{v['count']}")
def test_rfc4226_appendix_d_code_found_in_look_ahead_from_zero(vector: dict[str, Any]) -> None:
    accepted = verify_hotp(_state(), vector["hotp"])

    assert accepted.counter == vector["count"] + 1


def test_code_at_edge_of_look_ahead_accepted() -> None:
    accepted = verify_hotp(_state(counter=5), _code(15))

    assert accepted.counter == 16


def test_code_beyond_look_ahead_rejected() -> None:
    with pytest.raises(WrongCode) as caught:
        verify_hotp(_state(counter=5), _code(16))

    assert caught.value.state.counter == 5
    assert caught.value.state.failures == 1


def test_replay_rejected_after_acceptance() -> None:
    state = verify_hotp(_state(), _code(3))

    with pytest.raises(CodeReplayed) as caught:
        verify_hotp(state, _code(3))

    assert caught.value.state == state


def test_older_code_rejected_after_acceptance() -> None:
    state = verify_hotp(_state(), _code(3))

    with pytest.raises(WrongCode):
        verify_hotp(state, _code(1))


def test_simulated_token_codes_accepted_in_sequence() -> None:
    token = new_state(Model.USB, Algorithm.HOTP)
    generator = OtpGenerator(token, lambda _: None)
    state = HotpState(secret=token.secret)
    generator.next_code()  # a press that never reached the server

    for _ in range(3):
        state = verify_hotp(state, generator.next_code())

    assert state.counter == 4


def test_three_wrong_codes_block_token() -> None:
    state = _state()
    wrong = f"{(int(_code(0)) + 1) % 10**6:06d}"
    for _ in range(2):
        with pytest.raises(WrongCode) as caught:
            verify_hotp(state, wrong, look_ahead=0)
        state = caught.value.state

    with pytest.raises(CredentialBlocked) as blocked:
        verify_hotp(state, wrong, look_ahead=0)

    assert blocked.value.state.failures == 3
    with pytest.raises(CredentialBlocked):
        verify_hotp(blocked.value.state, _code(0))


def test_malformed_code_rejected_without_counting() -> None:
    with pytest.raises(MalformedCode) as caught:
        verify_hotp(_state(), "12 34")

    assert caught.value.state.failures == 0


def test_resync_with_two_consecutive_codes_moves_counter_past_them() -> None:
    with pytest.raises(WrongCode):
        verify_hotp(_state(), _code(50))

    resynced = resync_hotp(_state(failures=1), _code(50), _code(51))

    assert resynced.counter == 52
    assert resynced.failures == 0
    assert verify_hotp(resynced, _code(52)).counter == 53


def test_resync_with_non_consecutive_codes_rejected() -> None:
    with pytest.raises(WrongCode) as caught:
        resync_hotp(_state(), _code(50), _code(52))

    assert caught.value.state.counter == 0
    assert caught.value.state.failures == 1


def test_resync_with_codes_in_wrong_order_rejected() -> None:
    with pytest.raises(WrongCode):
        resync_hotp(_state(), _code(51), _code(50))


def test_resync_beyond_window_rejected() -> None:
    with pytest.raises(WrongCode):
        resync_hotp(_state(), _code(101), _code(102))


def test_resync_at_edge_of_window_accepted() -> None:
    assert resync_hotp(_state(), _code(100), _code(101)).counter == 102


def test_resync_cannot_replay_used_codes() -> None:
    with pytest.raises(WrongCode):
        resync_hotp(_state(counter=10), _code(8), _code(9))


def test_resync_refused_when_blocked() -> None:
    with pytest.raises(CredentialBlocked):
        resync_hotp(_state(failures=3), _code(0), _code(1))


def test_state_repr_hides_secret() -> None:
    assert repr(SECRET) not in repr(_state())
