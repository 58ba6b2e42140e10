"""``akkreditiv keys``: the API keys of operators, supervisors and service providers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from akkreditiv.cli.common import fail

if TYPE_CHECKING:
    from server.services.access import ApiKeys

keys_app = typer.Typer(
    help="API keys: who may call the service's API, and in which role.", no_args_is_help=True
)

KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The key file (default: AKKREDITIV_API_KEYS_FILE or var/api-keys.json).",
        show_default=False,
    ),
]


def _keys(path: Path | None) -> ApiKeys:
    from server.services.access import ApiKeys
    from server.settings import Settings

    return ApiKeys(path if path is not None else Settings().api_keys_file)


@keys_app.command("add")
def add(
    name: Annotated[
        str, typer.Option(help="Who holds it; for a service provider, its provider id.")
    ],
    role: Annotated[
        list[str],
        typer.Option(
            help="operator_bank, operator_centre, supervisor or provider (repeat for several)."
        ),
    ],
    organisation: Annotated[
        str | None,
        typer.Option(
            help="The bank or citizen service centre an operator's key belongs to (a key "
            "without one is its own organisation)."
        ),
    ] = None,
    display_name: Annotated[
        str | None,
        typer.Option(
            help="A service provider's name as people are shown it on the login pages and by "
            'the smartcard\'s program (e.g. "Borger.dk"); without one they see the id.'
        ),
    ] = None,
    file: KeyFile = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the key to this file (mode 0600) instead of printing it."),
    ] = None,
) -> None:
    """Make an API key. The key is shown (or written) once; only its hash is kept."""
    from server.services.access import Role

    try:
        roles = [Role(value) for value in role]
    except ValueError:
        raise fail(f"unknown role; choose from {', '.join(r.value for r in Role)}") from None
    keys = _keys(file)
    try:
        entry, key = keys.add(name, roles, organisation, display_name=display_name)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600, exist_ok=True)
        out.chmod(0o600)
        out.write_text(key + "\n", encoding="ascii")
        typer.echo(f"key {entry.key_id} for {entry.name} written to {out}")
    else:
        typer.echo(key)


@keys_app.command("list")
def list_keys(
    file: KeyFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """The keys: id, name, roles, organisation, when made and a provider's display name
    (never the keys themselves)."""
    keys = _keys(file)
    entries = keys.entries()
    if as_json:
        typer.echo(
            json.dumps(
                [{k: v for k, v in e.to_json().items() if k != "sha256"} for e in entries],
                indent=2,
            )
        )
        return
    for entry in entries:
        typer.echo(
            f"{entry.key_id}  {entry.name}  {','.join(sorted(entry.roles))}  "
            f"{entry.organisation or '-'}  {entry.created}"
            + (f"  {entry.display_name}" if entry.display_name else "")
        )


@keys_app.command("display-name")
def display_name(
    key_id: Annotated[str, typer.Argument(help="The service provider key's id.")],
    name: Annotated[
        str,
        typer.Argument(help='The name people are shown (e.g. "Borger.dk"); "" removes it.'),
    ],
    file: KeyFile = None,
) -> None:
    """Give a service provider's key the name people are shown for the provider; a running
    service shows it at once."""
    keys = _keys(file)
    try:
        entry = keys.set_display_name(key_id, name or None)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if entry is None:
        raise fail(f"no key with id {key_id}")
    shown = entry.display_name or entry.name
    typer.echo(f"key {entry.key_id}: people are shown {shown!r} for {entry.name}")


@keys_app.command("remove")
def remove(
    key_id: Annotated[str, typer.Argument(help="The key's id.")], file: KeyFile = None
) -> None:
    """Withdraw a key; a running service stops accepting it at once."""
    keys = _keys(file)
    if not keys.remove(key_id):
        raise fail(f"no key with id {key_id}")
    typer.echo(f"key {key_id} removed")
