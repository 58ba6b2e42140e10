"""The citizen's credentials as the overview's table shows them: when each was added and last
used (in the page's language), and the actions its kind and state allow (activate, block,
replace, change the password). Kinds and identifiers are named by ``credential_display``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from server.domain.model import CredentialKind, CredentialState, Level
from server.services.credentials.admission import held_back
from server.services.credentials.passwords import USE_DAY_S
from server.storage.tables import Credential

K = CredentialKind
S = CredentialState

# Kinds added with a serial and the code the device shows or speaks now.
TOKEN_PAGES = {"code-display": K.CODE_DISPLAY, "audio-reader": K.AUDIO_READER}
# Kinds that are replaced by a new device of the same kind (sent, or one already at hand).
REPLACEABLE = frozenset({K.CODE_DISPLAY, K.AUDIO_READER, K.OTP_TOKEN, K.KEY_CARD})
BLOCKABLE = frozenset({S.ACTIVE, S.ACTIVATION_PENDING})


def _date(value: dt.datetime, lang: str) -> str:
    local = value.astimezone()
    return local.strftime("%d.%m.%Y") if lang == "da" else local.strftime("%d %b %Y")


def _last_used(credential: Credential) -> dt.datetime | None:
    """When a code of a time-based device was last accepted, or the day a password was last
    checked right (the uses stored for them)."""
    step = USE_DAY_S if credential.kind is K.PASSWORD else credential.public_data.get("step")
    if credential.last_used_window is None or not isinstance(step, int):
        return None
    return dt.datetime.fromtimestamp(credential.last_used_window * step, dt.UTC)


@dataclass(frozen=True)
class Row:
    """One credential as a line of the overview's table, with the actions its state allows."""

    credential: Credential
    added: str
    last_used: str | None
    actions: Sequence[tuple[str, str]]  # (catalogue key of the action, path)
    # The level it counts toward at most, where that is below what it could (the person was
    # proofed higher after adding it: an operator admits it in person), else None.
    counts_up_to: Level | None = None


def row(credential: Credential, lang: str, identity_assurance: Level | None = None) -> Row:
    """The line of ``credential``; with ``identity_assurance``, it says whether the credential
    counts toward less than it could (see ``counts_up_to``)."""
    actions: list[tuple[str, str]] = []
    base = f"/account/credentials/{credential.id}"
    if credential.kind is K.PASSWORD:
        if credential.state is S.ACTIVE:
            actions.append(("account.action_change_password", "/account/password"))
    else:
        if credential.state is S.ACTIVATION_PENDING and credential.kind in TOKEN_PAGES.values():
            slug = next(s for s, k in TOKEN_PAGES.items() if k is credential.kind)
            serial = quote(credential.serial or "", safe="")
            actions.append(("account.action_activate", f"/account/add/{slug}?serial={serial}"))
        if credential.state in BLOCKABLE:
            actions.append(("account.action_block", f"{base}/block"))
        if credential.state in (S.BLOCKED, S.LOST) and credential.kind in REPLACEABLE:
            actions.append(("account.action_replace", f"{base}/replace"))
    last = _last_used(credential)
    return Row(
        credential,
        _date(credential.created_at, lang),
        _date(last, lang) if last else None,
        actions,
        None
        if identity_assurance is None or credential.state is not S.ACTIVE
        else held_back(credential, identity_assurance),
    )
