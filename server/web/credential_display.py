"""What a credential is called on every page, the citizen's and the operator's alike: its kind's
name (one catalogue, ``locales/credential.*.json``) and the identifier a person reads out on
the phone, so that support finds on the console exactly what the citizen sees."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from server.domain.model import CredentialKind
from server.storage.tables import Credential

K = CredentialKind

FIDO2_PREFIX: Final = "fido2:"  # a security key's serial: the prefix and SHA-256 of its id
FIDO2_SHORT: Final = 8  # hex digits of that digest shown: unique among one person's keys
GROUP: Final = 4  # a hex identifier is shown in groups of four, to read out and follow
MIN_SOUGHT: Final = 4  # letters or digits an operator types at least to find a credential


def _grouped(hex_text: str) -> str:
    return " ".join(hex_text[i : i + GROUP] for i in range(0, len(hex_text), GROUP))


def identifier(credential: Credential) -> str | None:
    """The identifier shown for ``credential``, or None where it has none (a password; a
    device ordered but not yet sent, or a card enrolled before card ids were recorded).

    - smartcard: the card's own id (its CHUID, what ``akkreditiv devices piv status`` prints
      as its serial), not the certificate's serial, which the person never sees; grouped;
    - security key: the first 8 hex digits of its serial, grouped (4a01 1deb);
    - code display, audio code reader, USB code token, key card: the serial as printed on the
      device or card and typed when it is activated, unchanged.
    """
    if credential.kind is K.PASSWORD:
        return None
    if credential.kind is K.PIV:
        card_id = credential.public_data.get("card_id")
        return _grouped(card_id.lower()) if isinstance(card_id, str) and card_id else None
    serial = credential.serial
    if not serial:
        return None
    if credential.kind is K.FIDO2:
        return _grouped(serial.removeprefix(FIDO2_PREFIX)[:FIDO2_SHORT].lower())
    return serial


def _letters_and_digits(text: str) -> str:
    return "".join(character for character in text.casefold() if character.isalnum())


def searchable(sought: str) -> bool:
    """Whether ``sought`` has enough letters or digits to look for (a part of an identifier)."""
    return len(_letters_and_digits(sought)) >= MIN_SOUGHT


def matches(credential: Credential, sought: str) -> bool:
    """Whether ``sought`` (what a person reads out, as the operator types it: any case, with
    or without the spaces, all of it or a part of at least 4 letters or digits) is in the
    credential's identifier, or in its stored serial (an API user's ``fido2:...``). A
    credential without an identifier is never found: nobody can read it out."""
    shown = identifier(credential)
    if shown is None or not searchable(sought):
        return False
    wanted = _letters_and_digits(sought)
    return any(wanted in _letters_and_digits(value) for value in (shown, credential.serial or ""))


@dataclass(frozen=True)
class CredentialNames:
    """The names of credentials in one language, for the templates (``names``) and for the
    routes' messages."""

    t: Callable[[str], str]

    def kind(self, kind: CredentialKind | str) -> str:
        return self.t(f"credential.kind.{CredentialKind(kind).value}")

    def serial(self, credential: Credential) -> str:
        """The identifier, or the catalogue's word for none (the table's cell is never empty)."""
        return identifier(credential) or self.t("credential.serial_none")

    def described(self, credential: Credential) -> str:
        """The kind and identifier together: "Sikkerhedsnøgle 4a01 1deb", "Adgangskode"."""
        shown = identifier(credential)
        kind = self.kind(credential.kind)
        return f"{kind} {shown}" if shown else kind
