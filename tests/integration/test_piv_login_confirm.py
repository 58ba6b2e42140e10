"""``devices piv login`` shows whom a login is for before the card signs, and signs only
after the person says yes: a phisher who hands someone the id (and pairing code) of the
phisher's own login at a bank gets nothing from a person who reads "You are logging in to
<the bank> at level High" and says no. Through the real stacks, as ``test_piv_login``."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from server.storage.engine import create_engine_for, session_factory
from server.storage.tables import AuditEntry, AuthTransaction, RateLimit
from tests.integration import test_piv_login as piv
from tests.integration.test_piv_login import (
    PIN,
    PROVIDER,
    Attach,
    Service,
    assert_high_assertion,
    enrol,
    high_person,
    identified_login,
    login,
)

from .conftest import CliRunner

pytestmark = pytest.mark.integration

# The fixtures of the PIV login's tests: a running service and a fresh card's state.
service = piv.service
card_state = piv.card_state

WRONG_PIN = "654321\n"
SHOWN = f"You are logging in to {PROVIDER} at level High."
ASKED = "Sign this login with your card? [y/N]"


def pin_tries(cli: CliRunner, reader: str) -> str:
    status = cli("devices", "piv", "status", "--reader", reader)
    assert status.returncode == 0, status.stderr
    # A card whose PIN is still verified from an earlier step of its session (the enrolment)
    # shows no count: no wrong PIN was tried since, or it would have ended the verification.
    if re.search(r"^\s*PIN: verified", status.stdout, re.MULTILINE):
        return "3"
    found = re.search(r"PIN tries left: (\d+)", status.stdout)
    assert found is not None, status.stdout
    return found.group(1)


def test_the_login_is_shown_and_signed_after_a_yes(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)
        enrol(cli, service, card, identity)
        transaction = identified_login(http, number)

        # --pin-stdin without --yes: the line before the PIN is the answer.
        result = login(cli, service, card, transaction, stdin="y\n" + PIN, yes=False)

        assert result.returncode == 0, result.stderr
        shown = result.stdout
        assert SHOWN in shown
        assert re.search(r"The login began at \d\d:\d\d and no browser has opened it\.", shown)
        assert "Go on only if you began this login yourself" in shown
        assert shown.index(ASKED) < shown.index("factors: piv")
        assert "123456" not in result.stdout + result.stderr
        assert_high_assertion(http, transaction)


def test_a_login_not_confirmed_is_not_signed(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    """Every answer but yes refuses: no, nothing, the end of input, and a rig's PIN line
    sent without --yes (it is read as the answer, never as the PIN). A wrong PIN follows
    each answer: had the command asked the card, a try would be gone."""
    card = attach(card_state)
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)
        enrol(cli, service, card, identity)
        transaction = identified_login(http, number)

        for stdin in ("n\n", "no\n", "\n", WRONG_PIN, ""):
            typed = stdin + WRONG_PIN if stdin else ""
            refused = login(cli, service, card, transaction, stdin=typed, yes=False)

            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert SHOWN in refused.stdout
            assert ASKED in refused.stdout
            assert "you did not confirm the login: the card signed nothing" in refused.stderr
            assert "factors" not in refused.stdout
            assert "654321" not in refused.stdout + refused.stderr

        # The card was never asked for the PIN, nor to sign.
        assert pin_tries(cli, card.reader.name) == "3"
        # The service saw no answer: the login has no factor, its card challenge waits
        # unspent, no failure is counted and no factor step is in the audit log.
        assert http.post(f"/authentications/{transaction}/complete").status_code == 403
        engine = create_engine_for(service.database_url)
        try:
            with session_factory(engine)() as session:
                row = session.get(AuthTransaction, uuid.UUID(transaction))
                assert row is not None
                assert row.ceremony_state is not None
                assert row.ceremony_state["factor"] == "piv"
                assert row.challenge is not None
                assert session.scalars(select(RateLimit)).all() == []
                events = session.scalars(
                    select(AuditEntry.event).where(AuditEntry.event == "authentication.factor")
                ).all()
                assert events == []
        finally:
            engine.dispose()

        # The person's own login still goes on when they say yes.
        signed = login(cli, service, card, transaction, stdin="yes\n" + PIN, yes=False)
        assert signed.returncode == 0, signed.stderr
        assert_high_assertion(http, transaction)


def test_the_login_is_spoken_before_the_pin_is_asked(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner, tmp_path: Path
) -> None:
    card = attach(card_state)
    audio = tmp_path / "speech"
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)
        enrol(cli, service, card, identity)
        transaction = identified_login(http, number)

        result = cli(
            "devices", "--speak", "--language", "en", "--audio-dir", str(audio),
            "piv", "login", "--url", service.url, "--transaction", transaction,
            "--reader", card.reader.name, "--pin-stdin",
            stdin="y\n" + PIN, env=service.cli_env,
        )  # fmt: skip

        assert result.returncode == 0, result.stderr
        said = re.search(
            rf"You are logging in to {re.escape(PROVIDER)} at level High\. The login began at "
            r"\d\d:\d\d and no browser has opened it\. Go on only if you began this login "
            r"yourself\.",
            result.stderr,
        )
        assert said is not None, result.stderr
        assert result.stderr.index(said.group(0)) < result.stderr.index("Enter your PIN.")
        names = sorted(p.name for p in audio.glob("*.wav"))
        assert names[:2] == ["0001-confirm_login.wav", "0002-enter_pin.wav"]
        assert names[-1].endswith("-done.wav")
