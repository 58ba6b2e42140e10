"""Make sure pcscd runs with the vpcd virtual reader, starting it where it does not.

pcscd is one daemon per machine (socket /run/pcscd/pcscd.comm). A machine with systemd
starts it on demand; a container or CI machine has to start it itself, which is what
``ensure_pcscd`` does for ``akkreditiv sim pcscd``, the integration tests and the benchmarks.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devices.errors import PcscUnavailable
from devices.transports.pcsc import PcscContext

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
VPCD_CONFIG = Path("/etc/reader.conf.d/vpcd")
VPCD_READER_PREFIX = "Virtual PCD"
VPCD_FIRST_PORT = 0x8C7B  # 35963; each reader slot listens on the next port


class PcscdSetupError(PcscUnavailable):
    """pcscd or the vpcd driver is missing or would not start."""


@dataclass(frozen=True)
class VpcdReader:
    name: str
    port: int


def pcscd_binary() -> str:
    found = shutil.which("pcscd") or next(
        (p for p in ("/usr/sbin/pcscd", "/sbin/pcscd") if Path(p).exists()), None
    )
    if found is None:
        raise PcscdSetupError(
            "pcscd is not installed", hint="apt-get install pcscd vsmartcard-vpcd"
        )
    return found


def vpcd_readers(readers: list[str]) -> list[VpcdReader]:
    """The vpcd readers among ``readers``: 'Virtual PCD 00 01' is slot 1, port 35964."""
    found = []
    for name in readers:
        if name.startswith(VPCD_READER_PREFIX):
            parts = name.split()
            try:
                slot = int(parts[-1], 16)
            except ValueError:
                continue
            found.append(VpcdReader(name, VPCD_FIRST_PORT + slot))
    return sorted(found, key=lambda reader: reader.port)


def running_readers() -> list[str] | None:
    """The readers pcscd reports, or None if no pcscd answers."""
    try:
        with PcscContext() as context:
            return context.readers()
    except PcscUnavailable:
        return None


PCSCD_RUN_DIR = Path("/run/pcscd")


def _process_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped) does not count."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def _remove_stale_daemon_files() -> bool:
    """pcscd refuses to start while its pid file names a process; after a crash that process
    may be gone or a zombie. Remove the leftovers then. True if anything was removed."""
    pid_file = PCSCD_RUN_DIR / "pcscd.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    if _process_alive(pid):
        return False
    for leftover in (pid_file, PCSCD_RUN_DIR / "pcscd.comm"):
        leftover.unlink(missing_ok=True)
    return True


def ensure_pcscd(timeout: float = 15.0) -> list[VpcdReader]:
    """Return the vpcd readers, starting pcscd if no daemon answers."""
    readers = running_readers()
    if readers is None:
        if not VPCD_DRIVER.exists() or not VPCD_CONFIG.exists():
            raise PcscdSetupError(
                "the vpcd virtual reader driver is not installed",
                hint="apt-get install vsmartcard-vpcd",
            )
        binary = pcscd_binary()
        # pcscd forks into the background itself and outlives this process, as a system
        # daemon should; its readiness is awaited below by asking it for its readers.
        result = subprocess.run(  # noqa: S603 - fixed binary path, no shell
            [binary], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0 and _remove_stale_daemon_files():
            result = subprocess.run(  # noqa: S603 - fixed binary path, no shell
                [binary], capture_output=True, text=True, timeout=timeout, check=False
            )
        if result.returncode != 0:
            raise PcscdSetupError(
                f"pcscd would not start: {result.stderr.strip() or result.returncode}",
                hint="run 'pcscd -f -d' to see why",
            )
        deadline = time.monotonic() + timeout
        delay = 0.02
        while (readers := running_readers()) is None or not vpcd_readers(readers):
            if time.monotonic() > deadline:
                raise PcscdSetupError(
                    f"pcscd started but showed no vpcd reader within {timeout:.0f} s",
                    hint="check /etc/reader.conf.d/vpcd and run 'pcscd -f -d'",
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
    found = vpcd_readers(readers)
    if not found:
        raise PcscdSetupError(
            "pcscd runs but has no vpcd reader",
            hint="install vsmartcard-vpcd and restart pcscd",
        )
    return found
