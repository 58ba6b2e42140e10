"""The simulated USB bus: each plugged device is its own process serving a Unix socket in
the bus folder, next to a small JSON file that describes it. Plugging starts such a process,
unplugging stops it; the pyusb backend in ``usb_backend`` enumerates the folder.

Wire format on a device socket: frames of a 4-byte big-endian length and a JSON object.
Requests carry ``op`` (describe, control, out, in, touch, ping); binary data travels as hex.
Each connection is served by its own thread, so a host can wait on the IN endpoint while a
test rig presses the button over a second connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_ADDRESS = 127
_MAX_FRAME = 1 << 20


def bus_dir() -> Path:
    """Where the simulated bus lives: AKKREDITIV_USB_BUS, else a per-user runtime folder."""
    configured = os.environ.get("AKKREDITIV_USB_BUS")
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "akkreditiv-usb"
    return Path(f"/tmp/akkreditiv-usb-{os.getuid()}")  # noqa: S108 - per-user, mode 0700


class BusError(Exception):
    """The simulated bus cannot do what was asked (no such device, no free address, ...)."""


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    header = _recv_exact(sock, 4)
    (length,) = struct.unpack(">I", header)
    if length > _MAX_FRAME:
        raise ConnectionError(f"frame of {length} bytes is too large")
    message = json.loads(_recv_exact(sock, length))
    if not isinstance(message, dict):
        raise ConnectionError("a frame must hold a JSON object")
    return message


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < count:
        chunk = sock.recv(count - len(buffer))
        if not chunk:
            raise ConnectionError("the device went away")
        buffer += chunk
    return bytes(buffer)


class UsbFunction(Protocol):
    """What a simulated USB device implements; the server does the plumbing."""

    kind: str
    serial: str

    def describe(self) -> dict[str, Any]:
        """Descriptors as plain data (see ``firmware_sim.tokens.fido_hid`` for the shape)."""

    def control(
        self, request_type: int, request: int, value: int, index: int, data: bytes, length: int
    ) -> bytes | None:
        """A control transfer; returns IN data (or b"" for OUT), None to stall."""

    def out(self, endpoint: int, data: bytes) -> None:
        """An OUT report arrived."""

    def read_in(self, endpoint: int, timeout: float) -> bytes | None:
        """The next IN report, or None after ``timeout`` seconds."""

    def touch(self) -> None:
        """The button is pressed."""

    def close(self) -> None:
        """The device is unplugged."""


@dataclass(frozen=True)
class DeviceInfo:
    address: int
    kind: str
    serial: str
    state: str
    pid: int
    socket: str

    @classmethod
    def read(cls, path: Path) -> DeviceInfo:
        data = json.loads(path.read_text("utf-8"))
        return cls(**data)


def devices(folder: Path | None = None) -> list[DeviceInfo]:
    """The devices plugged into the bus, by address; entries of dead processes are dropped."""
    folder = folder or bus_dir()
    _reap()
    found = []
    for info_path in sorted(folder.glob("*.json")):
        try:
            info = DeviceInfo.read(info_path)
        except (OSError, ValueError, TypeError):
            continue
        if _alive(info.pid) and Path(info.socket).exists():
            found.append(info)
    return sorted(found, key=lambda info: info.address)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def find_device(state: Path, folder: Path | None = None) -> DeviceInfo:
    wanted = str(Path(state).resolve())
    for info in devices(folder):
        if info.state == wanted:
            return info
    raise BusError(f"no device with state {state} is plugged in")


class DeviceServer:
    """Serves one ``UsbFunction`` on the bus until stopped (SIGTERM = unplug)."""

    def __init__(self, function: UsbFunction, state: Path, folder: Path | None = None) -> None:
        self.function = function
        self.state = Path(state).resolve()
        self.folder = folder or bus_dir()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.address = 0

    def _claim_address(self) -> int:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for info in devices(self.folder):
            if info.state == str(self.state):
                raise BusError(f"the device with state {self.state} is plugged in already")
        for address in range(1, MAX_ADDRESS + 1):
            lock = self.folder / f"{address:03d}.lock"
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                # A lock left by a process that died is taken over.
                try:
                    owner = int(lock.read_text() or "0")
                except (OSError, ValueError):
                    continue
                if owner and _alive(owner):
                    continue
                lock.unlink(missing_ok=True)
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                except FileExistsError:
                    continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return address
        raise BusError("the simulated bus is full (127 devices)")

    def _paths(self) -> tuple[Path, Path, Path]:
        base = self.folder / f"{self.address:03d}"
        return base.with_suffix(".sock"), base.with_suffix(".json"), base.with_suffix(".lock")

    def start(self) -> int:
        """Claim an address and listen; returns the address. The device is visible on the
        bus once this returns."""
        self.address = self._claim_address()
        sock_path, info_path, _ = self._paths()
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        os.chmod(sock_path, 0o600)
        listener.listen(16)
        self._listener = listener
        info = DeviceInfo(
            self.address,
            self.function.kind,
            self.function.serial,
            str(self.state),
            os.getpid(),
            str(sock_path),
        )
        tmp = info_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info.__dict__), "utf-8")
        os.replace(tmp, info_path)
        return self.address

    def serve_forever(self) -> None:
        if self._listener is None:
            raise BusError("start() the server before serving")
        self._listener.settimeout(0.2)
        try:
            while not self._stop.is_set():
                try:
                    connection, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()
        finally:
            self.unplug()

    def stop(self) -> None:
        """Stop serving. Shutting the listener down wakes ``accept`` at once, so an unplug
        (SIGTERM) takes effect now rather than at the accept loop's next timeout."""
        self._stop.set()
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)

    def pull(self) -> None:
        """Yank the device out now, even in the middle of a transfer: hosts see it vanish."""
        self._stop.set()
        self.unplug()

    def unplug(self) -> None:
        """Leave the bus: files first, so no host finds a device that is going away."""
        for path in self._paths():
            path.unlink(missing_ok=True)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
        self.function.close()

    def _serve(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)
        with connection:
            while not self._stop.is_set():
                try:
                    request = recv_frame(connection)
                except (ConnectionError, OSError, ValueError):
                    return
                try:
                    reply = self._dispatch(request)
                except Exception as exc:  # a firmware bug must not take the bus down
                    log.exception("device fault")
                    reply = {"error": f"device fault: {exc!r}"}
                try:
                    send_frame(connection, reply)
                except OSError:
                    return

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        f = self.function
        if op == "describe":
            return {"ok": True, "descriptors": f.describe()}
        if op == "control":
            answer = f.control(
                int(request["request_type"]),
                int(request["request"]),
                int(request["value"]),
                int(request["index"]),
                bytes.fromhex(request.get("data", "")),
                int(request.get("length", 0)),
            )
            if answer is None:
                return {"stall": True}
            return {"ok": True, "data": answer.hex()}
        if op == "out":
            f.out(int(request["endpoint"]), bytes.fromhex(request["data"]))
            return {"ok": True}
        if op == "in":
            report = f.read_in(int(request["endpoint"]), float(request["timeout"]))
            if report is None:
                return {"timeout": True}
            return {"ok": True, "data": report.hex()}
        if op == "touch":
            f.touch()
            return {"ok": True}
        if op == "ping":
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}


def run_device(
    function: UsbFunction,
    state: Path,
    folder: Path | None = None,
    *,
    ready_fd: int | None = None,
    server: DeviceServer | None = None,
) -> None:
    """The body of a device process: plug in, report the address, serve until SIGTERM."""
    server = server or DeviceServer(function, state, folder)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    address = server.start()
    if ready_fd is not None:
        os.write(ready_fd, f"{address}\n".encode())
        os.close(ready_fd)
    server.serve_forever()


_children: list[subprocess.Popen[bytes]] = []


def plug(
    kind: str,
    state: Path,
    folder: Path | None = None,
    timeout: float = 15.0,
    *,
    up_timeout: float | None = None,
) -> DeviceInfo:
    """Start a device process for ``state`` and return once it is on the bus.
    ``up_timeout`` is how long the token waits for a touch (its own default otherwise)."""
    folder = folder or bus_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = folder / f"{Path(state).name}.log"
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [
                sys.executable,
                "-m",
                "akkreditiv",
                "sim",
                "usb-device",
                kind,
                "--state",
                str(Path(state).resolve()),
                "--bus",
                str(folder),
                "--ready-fd",
                str(write_end),
                *(["--up-timeout", str(up_timeout)] if up_timeout is not None else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    # The device outlives this call (it is unplugged by ``unplug``); keep the handle so it is
    # not collected while the process runs, which Python reports as a leak.
    _children.append(process)
    try:
        line = _read_line(read_end, timeout)
    finally:
        os.close(read_end)
    if not line:
        process.poll()
        tail = log_path.read_text("utf-8", "replace").strip().splitlines()[-3:]
        raise BusError(f"the device did not come up: {' / '.join(tail) or 'no output'}")
    return find_device(state, folder)


def _read_line(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    buffer = b""
    while not buffer.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return ""
        chunk = os.read(fd, 64)
        if not chunk:
            return ""  # the process ended without reporting ready
        buffer += chunk
    return buffer.decode().strip()


def _reap() -> None:
    """Collect device processes this process started that have ended."""
    _children[:] = [child for child in _children if child.poll() is None]


def unplug(state: Path, folder: Path | None = None, timeout: float = 10.0) -> DeviceInfo:
    """Pull the device with this state out of the bus and wait until it is gone."""
    info = find_device(state, folder)
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    child = next((c for c in _children if c.pid == info.pid), None)
    if child is not None:
        # Plugged by this process: wait for its exit itself rather than polling for it.
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BusError(
                f"device {info.address} did not leave the bus within {timeout:.0f} s"
            ) from None
    delay = 0.01
    while True:
        _reap()
        if not Path(info.socket).exists() and not _alive(info.pid):
            break
        if time.monotonic() > deadline:
            raise BusError(f"device {info.address} did not leave the bus within {timeout:.0f} s")
        time.sleep(delay)  # waiting for another process to exit: poll its pid, bounded
        delay = min(delay * 2, 0.1)
    return info


@contextlib.contextmanager
def connect(info: DeviceInfo) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(info.socket)
    except OSError as exc:
        sock.close()
        raise BusError(f"device {info.address} is gone") from exc
    try:
        yield sock
    finally:
        sock.close()


def request(info: DeviceInfo, message: dict[str, Any]) -> dict[str, Any]:
    with connect(info) as sock:
        send_frame(sock, message)
        return recv_frame(sock)


def touch(state: Path, folder: Path | None = None) -> DeviceInfo:
    """Press the device's button. A device that leaves the bus while handling the touch (an
    armed fault) was still touched."""
    info = find_device(state, folder)
    try:
        reply = request(info, {"op": "touch"})
    except ConnectionError:
        log.warning("device %d left the bus while being touched", info.address)
        return info
    if not reply.get("ok"):
        raise BusError(f"the device did not take the touch: {reply}")
    return info
