"""Fixtures that start the real components: pcscd with the vpcd reader, and simulated cards
attached to it in their own processes, exactly as a test rig would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from akkreditiv.cli.pcscd import VpcdReader, ensure_pcscd
from devices.errors import DeviceError
from devices.transports.pcsc import PcscContext
from tests.integration.fido_fixtures import plug_key, sim_home, usb_bus_dir

__all__ = ["plug_key", "sim_home", "usb_bus_dir"]  # fixtures shared with the FIDO tests

IN_CI = os.environ.get("CI", "").lower() == "true"
AKKREDITIV = [sys.executable, "-m", "akkreditiv"]


def missing_component(message: str) -> None:
    """Fail in CI (a missing component there is a broken setup), skip on a developer machine."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: integration components are required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def vpcd_readers() -> list[VpcdReader]:
    try:
        return ensure_pcscd()
    except DeviceError as exc:
        missing_component(f"pcscd with the vpcd reader is not available: {exc}")
        raise  # unreachable: missing_component always leaves


@dataclass
class AttachedCard:
    reader: VpcdReader
    state: Path
    process: subprocess.Popen[str]

    def detach(self, timeout: float = 10.0) -> int:
        """SIGTERM, as a rig pulling the card cleanly; returns the exit code once the card is
        gone from the reader."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        with PcscContext() as context:
            context.wait_for(self.reader.name, present=False, timeout=timeout)
        return code

    def wait_gone(self, timeout: float = 10.0) -> int:
        """Wait for a card that left by itself (an armed fault) and its process to end."""
        with PcscContext() as context:
            context.wait_for(self.reader.name, present=False, timeout=timeout)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def free_reader(vpcd_readers: list[VpcdReader]) -> VpcdReader:
    with PcscContext() as context:
        for reader in vpcd_readers:
            if context.card_present(reader.name) is None:
                return reader
    pytest.fail("every vpcd reader holds a card; stop other simulators (scripts/start) first")
    raise AssertionError  # unreachable


@pytest.fixture
def attach(free_reader: VpcdReader) -> Iterator[Callable[..., AttachedCard]]:
    """Attach a card from a state file to a free vpcd reader, in its own process, and wait
    (through pcscd) until the reader reports it present."""
    attached: list[AttachedCard] = []

    def _attach(state: Path, kind: str = "piv") -> AttachedCard:
        process = subprocess.Popen(
            [
                *AKKREDITIV,
                "sim",
                "attach",
                kind,
                "--state",
                str(state),
                "--vpcd",
                f"127.0.0.1:{free_reader.port}",
                "--wait",
                "10",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        card = AttachedCard(free_reader, state, process)
        attached.append(card)
        with PcscContext() as context:
            try:
                context.wait_for(free_reader.name, present=True, timeout=15)
            except DeviceError:
                process.kill()
                _, err = process.communicate()
                pytest.fail(f"the simulated card did not appear in {free_reader.name}: {err}")
        return card

    yield _attach
    for card in attached:
        if card.process.poll() is None:
            card.detach()
        if card.process.stdout:
            card.process.stdout.close()
        if card.process.stderr:
            card.process.stderr.close()


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def _run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AKKREDITIV, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def cli() -> CliRunner:
    """Run the real ``akkreditiv`` command in a child process."""
    return _run_cli
