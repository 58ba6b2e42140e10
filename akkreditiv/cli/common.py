"""Pieces every command group shares: exiting with a clear message, device errors, PINs, and
calls to the service's API."""

from __future__ import annotations

import getpass
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from devices.errors import DeviceError
from devices.events import Event, EventSink, event_for_error, ignore

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.orm import Session

    from server.settings import Settings


class Listener:
    """Where the device commands' events go: nowhere, or to speech when --speak is given.
    The composition root is the one place that joins devices and accessibility."""

    sink: EventSink = ignore

    @classmethod
    def emit(cls, event: Event) -> None:
        cls.sink(event)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@contextmanager
def device_errors(device: str = "card") -> Iterator[None]:
    """Every device error becomes one clear line with what to do (and, with --speak, the
    spoken equivalent), and exit code 2."""
    try:
        yield
    except DeviceError as exc:
        if not exc.announced:
            Listener.emit(event_for_error(exc, device=device))
        raise fail(str(exc), 2) from exc


def secret(prompt: str, from_stdin: bool) -> str:
    """A PIN or PUK: a line of standard input, or asked on the terminal without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise fail(f"standard input ended before the {prompt}")
        return line.rstrip("\r\n")
    # getpass turns echo off *before* it shows the prompt; a prompt shown first would echo
    # anything typed ahead, and turning echo off then would throw that input away.
    return getpass.getpass(f"{prompt}: ")


def confirmed(question: str, from_stdin: bool) -> bool:
    """The person's yes to ``question``, default no. With ``from_stdin`` (a program that
    reads its PIN from standard input) the answer is the line before the PIN: ``y`` or
    ``yes`` (any case) is yes, anything else or no line at all is no, and never a second
    line (which is the PIN). On a terminal it is asked; an answer left empty, or the end of
    input, is no."""
    if from_stdin:
        typer.echo(f"{question} [y/N]: ", nl=False)
        answer = sys.stdin.readline().strip().lower()
        typer.echo()
        return answer in {"y", "yes"}
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        typer.echo()
        return False


PinStdin = Annotated[
    bool,
    typer.Option("--pin-stdin", help="Read the PIN (then any new PIN) from standard input lines."),
]
StateOption = Annotated[Path, typer.Option("--state", help="The token's state file.")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The database (default: AKKREDITIV_DATABASE_URL or the embedded SQLite file).",
        show_default=False,
    ),
]


API_KEY_ENV = "AKKREDITIV_API_KEY"
API_KEY_FILE_ENV = "AKKREDITIV_API_KEY_FILE"


def api_key_headers() -> dict[str, str]:
    """The Authorization header for commands that call the service's API, from
    ``AKKREDITIV_API_KEY`` or the file named by ``AKKREDITIV_API_KEY_FILE`` (the key never
    goes on a command line, where other users of the machine could read it)."""
    import os

    key = os.environ.get(API_KEY_ENV, "").strip()
    key_file = os.environ.get(API_KEY_FILE_ENV, "").strip()
    if not key and key_file:
        try:
            key = Path(key_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"{API_KEY_FILE_ENV}: cannot read {key_file}: {exc}") from None
    return {"Authorization": f"Bearer {key}"} if key else {}


SERVICE_ERROR = 3  # the service refused or could not be reached (2 is for device problems)


def service_client(url: str) -> httpx.Client:
    """The HTTP client of every call these commands make to the service: headers the service
    needs (such as an API key) are added here, in one place."""
    import httpx

    return httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=api_key_headers())


def call_service(
    http: httpx.Client, path: str, doing: str, body: dict[str, Any] | None = None
) -> Any:
    """POST ``body`` to ``path``; the JSON answer, or exit with the service's reason."""
    import httpx

    try:
        answer = http.post(path, json=body)
    except httpx.HTTPError as exc:
        raise fail(
            f"{doing}: cannot reach the service at {http.base_url}: {exc}", SERVICE_ERROR
        ) from exc
    if answer.status_code >= 300:
        reason = answer.text
        try:
            problem = answer.json()
        except ValueError:
            problem = None
        if isinstance(problem, dict):
            reason = str(problem.get("detail") or problem.get("title") or reason)
        raise fail(f"{doing}: the service answered {answer.status_code}: {reason}", SERVICE_ERROR)
    return answer.json()


def cli_actor() -> str:
    """Who the audit log names for a command run by hand: the user running it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise fail(f"{what} is not an id like 1b4e28ba-2fa1-11d2-883f-0016d3cca427") from None


@contextmanager
def database_session(settings: Settings, failure: str) -> Iterator[Session]:
    """A session on the configured database (which must exist and be migrated: the service
    does that when it starts); database errors become one line starting ``failure`` and
    exit 1, never repeating the URL (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from server.storage.engine import session_factory
    from server.storage.errors import StorageError, UnsupportedDatabase
    from server.wiring import engine_for

    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise fail("the database URL is not a database URL") from exc
    # Opening a missing SQLite file would create an empty database; say it is not there instead.
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise fail(f"no database at {url.database}")
    try:
        engine = engine_for(settings)
    except UnsupportedDatabase as exc:
        raise fail(f"unsupported database URL: {exc.reason}") from exc
    try:
        with session_factory(engine)() as session:
            yield session
    except (SQLAlchemyError, StorageError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise fail(f"{failure}: {reason}") from exc
    finally:
        engine.dispose()
