"""Who may call the API: API keys for machine callers (operators' systems at banks and citizen
service centres, supervisors, service providers), their roles, and what each role may do.

A key is ``akk_<id>_<secret>``: ``id`` (8 hex digits) finds the entry, and only the SHA-256
digest of the whole key is stored, compared in constant time. A key has 256 random bits, so a
fast hash is enough (no password stretching is needed for a secret nobody chose). The key
file is JSON, written atomically with mode 0600, and re-read when it changes on disk, so keys
added or removed with ``akkreditiv keys`` take effect without a restart.

A service provider's key name *is* the provider id (the audience of its assertions): a
provider can only begin and complete its own logins; its key may carry a display name, the
name people are shown on the login pages and by the smartcard's program (the id otherwise).
An operator's key belongs to an
organisation (a bank or a citizen service centre); a key made before organisations existed is
its own organisation (``key:<id>``), so it shares customers and approvals with no other key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from server.domain.errors import Refused, Unverified
from server.domain.model import ProofingChannel
from server.services.errors import KeyMaterialRejected

KEY_PREFIX = "akk_"
_KEY_PATTERN = re.compile(r"^akk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,128}$")
# The provider ids of the service's own logins (self-service, a bank's desk) begin so: no
# provider key may be named so, or its logins would be named as the service's own.
OWN_PROVIDER_PREFIX = "akkreditiv-"
# No "@" (the audit actor joins name and organisation with it) and no "key:" prefix (the
# organisation a key without one stands for).
_ORGANISATION_PATTERN = re.compile(r"^(?!key:)[A-Za-z0-9._:/-]{1,64}$")
DISPLAY_NAME_LENGTH = 100


def valid_display_name(value: object) -> bool:
    """A provider's display name as people are shown it: 1-100 printable characters (no
    control characters, so no terminal escapes either), not only spaces."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= DISPLAY_NAME_LENGTH
        and value.strip() == value
        and value.isprintable()
        and bool(value.strip())
    )


class Role(enum.StrEnum):
    OPERATOR_BANK = "operator_bank"
    OPERATOR_CENTRE = "operator_centre"
    SUPERVISOR = "supervisor"
    PROVIDER = "provider"


class Permission(enum.StrEnum):
    VIEW_IDENTITY = "view_identity"
    ENROL = "enrol"
    SUSPEND = "suspend"
    CLOSE = "close"
    MANAGE_CREDENTIALS = "manage_credentials"
    IMPORT_TOKENS = "import_tokens"
    LOGIN = "login"  # begin and complete logins as a service provider


_OPERATOR = frozenset(
    {
        Permission.VIEW_IDENTITY,
        Permission.ENROL,
        Permission.SUSPEND,
        Permission.MANAGE_CREDENTIALS,
    }
)
PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.OPERATOR_BANK: _OPERATOR,
        Role.OPERATOR_CENTRE: _OPERATOR,
        Role.SUPERVISOR: _OPERATOR | {Permission.CLOSE, Permission.IMPORT_TOKENS},
        Role.PROVIDER: frozenset({Permission.LOGIN}),
    }
)
if set(PERMISSIONS) != set(Role):  # pragma: no cover - checked at import
    raise RuntimeError("every role needs a row in PERMISSIONS")

# The proofing channel an operator may record: a bank operator proves people at the bank.
CHANNEL_OF_ROLE: Mapping[Role, ProofingChannel] = MappingProxyType(
    {
        Role.OPERATOR_BANK: ProofingChannel.BANK,
        Role.OPERATOR_CENTRE: ProofingChannel.SERVICE_CENTRE,
    }
)


class NotAuthenticated(Unverified):
    code = "unauthenticated"
    default_detail = "this needs an API key: send 'Authorization: Bearer akk_...'"


class NotPermitted(Refused):
    code = "forbidden"
    default_detail = "this API key's role does not allow that"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the key's id and name, its roles and its organisation (``None``
    for a key made without one)."""

    key_id: str
    name: str
    roles: frozenset[Role]
    organisation_name: str | None = None

    @property
    def organisation(self) -> str:
        """The organisation the key acts for; a key without one is its own."""
        return self.organisation_name or f"key:{self.key_id}"

    @property
    def actor(self) -> str:
        """How the audit log names this caller (with the organisation, when the key has one)."""
        roles = "+".join(sorted(self.roles))
        if self.organisation_name is None:
            return f"{roles}:{self.name}"
        return f"{roles}:{self.name}@{self.organisation_name}"

    @property
    def serves_own_customers_only(self) -> bool:
        """A bank operator acts only on the bank's own customers; a citizen service centre
        serves everyone, and so does a supervisor."""
        return Role.OPERATOR_BANK in self.roles and self.roles.isdisjoint(
            {Role.SUPERVISOR, Role.OPERATOR_CENTRE}
        )

    def may(self, permission: Permission) -> bool:
        return any(permission in PERMISSIONS[role] for role in self.roles)

    def require(self, permission: Permission) -> None:
        if not self.may(permission):
            raise NotPermitted(f"{self.actor} lacks {permission}")

    def may_prove_on(self, channel: ProofingChannel) -> bool:
        """Whether this caller may record identity proofing done on ``channel``."""
        if Role.SUPERVISOR in self.roles:
            return True
        return any(CHANNEL_OF_ROLE.get(role) is channel for role in self.roles)


@dataclass(frozen=True)
class KeyEntry:
    key_id: str
    name: str
    roles: frozenset[Role]
    digest: str  # SHA-256 of the whole key, hex
    created: str
    organisation: str | None = None
    display_name: str | None = None  # a provider's name as people are shown it

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.key_id,
            "name": self.name,
            "roles": sorted(self.roles),
            "sha256": self.digest,
            "created": self.created,
        }
        if self.organisation is not None:
            document["organisation"] = self.organisation
        if self.display_name is not None:
            document["display_name"] = self.display_name
        return document

    def caller(self) -> Caller:
        return Caller(self.key_id, self.name, self.roles, self.organisation)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyEntry:
        try:
            key_id = str(data["id"])
            name = str(data["name"])
            roles = frozenset(Role(role) for role in data["roles"])
            digest = str(data["sha256"])
            organisation = data.get("organisation")
            display_name = data.get("display_name")
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyMaterialRejected(f"API key entry unreadable: {exc}") from None
        if not re.fullmatch(r"[0-9a-f]{8}", key_id) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise KeyMaterialRejected(f"API key entry {key_id!r} is malformed")
        if not roles or not _NAME_PATTERN.fullmatch(name):
            raise KeyMaterialRejected(f"API key entry {key_id!r} has no roles or a bad name")
        if organisation is not None and not (
            isinstance(organisation, str) and _ORGANISATION_PATTERN.fullmatch(organisation)
        ):
            raise KeyMaterialRejected(f"API key entry {key_id!r} has a bad organisation")
        if display_name is not None and not valid_display_name(display_name):
            raise KeyMaterialRejected(f"API key entry {key_id!r} has a bad display name")
        created = str(data.get("created", ""))
        return cls(key_id, name, roles, digest, created, organisation, display_name)


def _check_display_name(display_name: str | None, roles: frozenset[Role]) -> None:
    if display_name is None:
        return
    if Role.PROVIDER not in roles:
        raise ValueError("only a service provider's key has a display name")
    if not valid_display_name(display_name):
        raise ValueError(
            f"a display name is 1-{DISPLAY_NAME_LENGTH} printable characters, "
            "without spaces at either end"
        )


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


class ApiKeys:
    """The API keys of one key file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, KeyEntry] = {}

    # --- reading ---

    def entries(self) -> list[KeyEntry]:
        self._refresh()
        return sorted(self._entries.values(), key=lambda entry: (entry.name, entry.key_id))

    def authenticate(self, key: str) -> Caller | None:
        """The caller a presented key belongs to, or ``None``."""
        match = _KEY_PATTERN.fullmatch(key)
        if match is None:
            return None
        self._refresh()
        entry = self._entries.get(match.group(1))
        if entry is None:
            # Compare anyway, so an unknown id costs the same as a wrong secret.
            hmac.compare_digest(_digest(key), "0" * 64)
            return None
        if not hmac.compare_digest(_digest(key), entry.digest):
            return None
        return entry.caller()

    def caller(self, key_id: str) -> Caller | None:
        """The caller of the key ``key_id`` as the key file says now (None once removed):
        a console session signed in with a key ends when the key is removed."""
        self._refresh()
        entry = self._entries.get(key_id)
        return None if entry is None else entry.caller()

    def display_name(self, provider: str) -> str | None:
        """The display name of the service provider ``provider`` (its keys' name): that of
        its newest provider key with one, None when none has (people are shown the id)."""
        self._refresh()
        named = [
            entry
            for entry in self._entries.values()
            if entry.name == provider and Role.PROVIDER in entry.roles and entry.display_name
        ]
        if not named:
            return None
        return max(named, key=lambda entry: (entry.created, entry.key_id)).display_name

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            with self._lock:
                self._stamp, self._entries = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            self._entries = {entry.key_id: entry for entry in self._read()}
            self._stamp = stamp

    def _read(self) -> list[KeyEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyMaterialRejected(f"{self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyMaterialRejected(f"{self.path}: expected {{'keys': [...]}}")
        return [KeyEntry.from_json(item) for item in data["keys"]]

    # --- changing ---

    def add(
        self,
        name: str,
        roles: Iterable[Role],
        organisation: str | None = None,
        *,
        display_name: str | None = None,
    ) -> tuple[KeyEntry, str]:
        """Make a key (of ``organisation``, for an operator's key; with ``display_name``, for
        a service provider's); returns its entry and the key itself, which is shown once and
        never stored."""
        role_set = frozenset(Role(role) for role in roles)
        if not role_set:
            raise ValueError("a key needs at least one role")
        if not _NAME_PATTERN.fullmatch(name):
            raise ValueError("a key name is 1-128 characters of A-Z a-z 0-9 . _ : / @ -")
        if Role.PROVIDER in role_set and name.startswith(OWN_PROVIDER_PREFIX):
            raise ValueError(f"provider names beginning {OWN_PROVIDER_PREFIX!r} are the service's")
        if organisation is not None and not _ORGANISATION_PATTERN.fullmatch(organisation):
            raise ValueError(
                "an organisation is 1-64 characters of A-Z a-z 0-9 . _ : / - (not 'key:...')"
            )
        _check_display_name(display_name, role_set)
        entries = {entry.key_id: entry for entry in self._read()} if self.path.exists() else {}
        key_id = secrets.token_hex(4)
        while key_id in entries:  # pragma: no cover - 1 in 4 billion
            key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        entry = KeyEntry(
            key_id,
            name,
            role_set,
            _digest(key),
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            organisation,
            display_name,
        )
        entries[key_id] = entry
        self._write(entries.values())
        return entry, key

    def set_display_name(self, key_id: str, display_name: str | None) -> KeyEntry | None:
        """Give the provider key ``key_id`` a display name (None removes it); the changed
        entry, or None when there is no such key. A running service shows it at once."""
        if not self.path.exists():
            return None
        entries = {entry.key_id: entry for entry in self._read()}
        entry = entries.get(key_id)
        if entry is None:
            return None
        _check_display_name(display_name, entry.roles)
        entries[key_id] = dataclasses.replace(entry, display_name=display_name)
        self._write(entries.values())
        return entries[key_id]

    def remove(self, key_id: str) -> bool:
        if not self.path.exists():
            return False
        entries = {entry.key_id: entry for entry in self._read()}
        if entries.pop(key_id, None) is None:
            return False
        self._write(entries.values())
        return True

    def _write(self, entries: Iterable[KeyEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"keys": [entry.to_json() for entry in entries]}
        descriptor, temporary = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
