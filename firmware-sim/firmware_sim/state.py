"""Persistent token state: a JSON document per token, written atomically.

A real token keeps keys, counters and PIN retries in non-volatile memory that survives
unplugging. Here that memory is a file. Every write goes to a temporary file in the same
folder, is flushed to disk, and then renamed over the old one, so a crash or a pulled
plug leaves either the old state or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_FORMAT = 1


class StateError(Exception):
    """The state file is missing, unreadable, or not a token state of a known kind."""


def write_atomic(path: Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(path: Path, kind: str, data: dict[str, Any]) -> None:
    document = {"format": STATE_FORMAT, "kind": kind, **data}
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True).encode("utf-8"))


def load(path: Path, kind: str | None = None) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_bytes())
    except FileNotFoundError as exc:
        raise StateError(f"no token state at {path}; create one with 'akkreditiv sim new'") from exc
    except (OSError, ValueError) as exc:
        raise StateError(f"token state {path} is unreadable: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise StateError(f"{path} is not a token state file of format {STATE_FORMAT}")
    if kind is not None and document.get("kind") != kind:
        raise StateError(f"{path} holds a {document.get('kind')!r} token, not {kind!r}")
    return document


def peek_kind(path: Path) -> str:
    kind = load(path).get("kind")
    if not isinstance(kind, str):
        raise StateError(f"{path} does not say which kind of token it holds")
    return kind
