"""Host-side OATH session (Yubico's YKOATH): add, list and delete TOTP/HOTP credentials and have
the card compute their codes, over any ``ApduTransport`` (PC/SC contact or NFC, or a simulator)."""

from __future__ import annotations

import builtins
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from devices.errors import ApduError, SecurityStatusNotSatisfied
from devices.protocol.apdu import CommandApdu
from devices.protocol.sw import SW, error_for_sw
from devices.protocol.ykoath import (
    AID,
    CHALLENGE_LENGTH,
    DEFAULT_PERIOD,
    P2_TRUNCATED,
    RESET_P1P2,
    Credential,
    Ins,
    OathAlgorithm,
    OathType,
    SelectResponse,
    calculate_all_data,
    calculate_data,
    clear_code_data,
    derive_key,
    name_data,
    oath_hmac,
    parse_calculate,
    parse_calculate_all,
    parse_list,
    parse_validate,
    put_data,
    set_code_data,
    split_card_name,
    time_challenge,
    validate_data,
)
from devices.tokens.piv import ApduTransport

log = logging.getLogger(__name__)

INS_SELECT = 0xA4


class OathError(ApduError):
    """The OATH application refused a command; ``sw`` is its status word."""


class CredentialNotFound(OathError):
    """No credential of that name is on the card (6984)."""

    hint = "list the credentials to see the names the card holds"


class CredentialStorageFull(OathError):
    """The card has no room for another credential (6A84)."""

    hint = "delete a credential you no longer use, then add the new one"


class OathLocked(OathError, SecurityStatusNotSatisfied):
    """The application wants its access code first, or a credential that needs a touch was
    not touched in time (6982)."""

    hint = "unlock with the access code; for a touch credential, touch the key when it blinks"


class AccessCodeRejected(OathError):
    """The card did not accept the access code, or failed to prove it holds the same one."""

    hint = "check the password; select the application again before the next try"


@dataclass(frozen=True)
class OathInfo:
    version: tuple[int, int, int]
    device_id: str
    locked: bool


def _error(sw: int, ins: int, name: str | None) -> ApduError:
    if sw == SW.SECURITY_STATUS_NOT_SATISFIED:
        return OathLocked(sw, "the OATH application is locked, or the touch was missed (6982)")
    if sw == SW.DATA_INVALID and ins == Ins.VALIDATE:
        return AccessCodeRejected(sw, "the card rejected the access code")
    if sw == SW.DATA_INVALID and name is not None:
        return CredentialNotFound(sw, f"no credential named {name!r} on the card")
    if sw == SW.NOT_ENOUGH_MEMORY:
        return CredentialStorageFull(sw, "the card has no room for another credential")
    return error_for_sw(sw)


class OathSession:
    """One conversation with an OATH card application. ``clock`` gives the time TOTP codes
    are computed for when the caller gives none."""

    def __init__(self, transport: ApduTransport, *, clock: Callable[[], float] = time.time) -> None:
        self._transport = transport
        self._clock = clock
        self._selected: SelectResponse | None = None
        self._challenge: bytes | None = None  # the card's, until VALIDATE spends it

    def _send(
        self,
        ins: int,
        p1: int = 0x00,
        p2: int = 0x00,
        data: bytes = b"",
        *,
        le: int | None = None,
        name: str | None = None,
    ) -> bytes:
        response = self._transport.transmit(CommandApdu(0x00, ins, p1, p2, data, le=le))
        if not response.ok:
            raise _error(response.sw, ins, name)
        return response.data

    # --- application --------------------------------------------------------------------

    def select(self) -> OathInfo:
        """Select the OATH application; raises ``FileNotFound`` if the card has none."""
        answer = self._select()
        return OathInfo(answer.version, answer.device_id, answer.locked)

    def _select(self) -> SelectResponse:
        answer = SelectResponse.decode(self._send(INS_SELECT, 0x04, 0x00, AID, le=256))
        self._selected, self._challenge = answer, answer.challenge
        log.debug("OATH application %s, locked: %s", answer.version, answer.locked)
        return answer

    def _selection(self) -> SelectResponse:
        return self._selected or self._select()

    def reset(self) -> None:
        """Delete every credential and the access code; the application gets a new device id."""
        self._send(Ins.RESET, *RESET_P1P2)
        self._select()

    # --- access code --------------------------------------------------------------------

    def derive_key(self, password: str) -> bytes:
        """The access key for ``password`` on this card (it depends on the card's salt)."""
        return derive_key(self._selection().salt, password)

    def validate(self, key: bytes) -> None:
        """Unlock with the access key; mutual, so an impostor card fails too. Raises
        ``AccessCodeRejected``. Does nothing when the application has no access code."""
        # The card gives one try per SELECT: after a spent challenge, ask for a fresh one.
        selection = self._select() if self._challenge is None else self._selection()
        card_challenge, self._challenge = self._challenge, None
        if card_challenge is None:
            return
        algorithm = selection.algorithm or OathAlgorithm.SHA1
        host_challenge = secrets.token_bytes(CHALLENGE_LENGTH)
        answer = self._send(
            Ins.VALIDATE,
            data=validate_data(oath_hmac(algorithm, key, card_challenge), host_challenge),
            le=256,
        )
        proof = parse_validate(answer)
        if not hmac.compare_digest(proof, oath_hmac(algorithm, key, host_challenge)):
            # The card does not hold our key: it may be an impostor.
            raise AccessCodeRejected(
                SW.SECURITY_STATUS_NOT_SATISFIED, "the card failed its proof of the access code"
            )

    def set_code(self, key: bytes) -> None:
        """Protect the application with an access key (``derive_key`` makes one from a
        password). A locked application must be unlocked first."""
        if not key:
            raise ValueError("an access key is not empty; use clear_code() to remove it")
        self._send(Ins.SET_CODE, data=set_code_data(key, secrets.token_bytes(CHALLENGE_LENGTH)))

    def clear_code(self) -> None:
        """Remove the access code (the application must be unlocked)."""
        self._send(Ins.SET_CODE, data=clear_code_data())

    # --- credentials --------------------------------------------------------------------

    def list(self) -> builtins.list[Credential]:
        """The credentials on the card. LIST tells name, type and algorithm only, so
        ``digits``, ``counter`` and ``touch`` are None."""
        return parse_list(self._send(Ins.LIST, le=256))

    def put(self, credential: Credential, secret: bytes) -> None:
        """Store a credential, replacing one with the same name. Raises
        ``CredentialStorageFull`` when the card has no room."""
        self._send(Ins.PUT, data=put_data(credential, secret))

    def delete(self, name: str | Credential) -> None:
        """Delete a credential, given by its card name or as listed; ``CredentialNotFound``
        if the card has none of that name."""
        card_name = name.card_name if isinstance(name, Credential) else name
        self._send(Ins.DELETE, data=name_data(card_name), name=card_name)

    # --- codes --------------------------------------------------------------------------

    def calculate(self, name: str | Credential, at: float | None = None) -> str:
        """The code of one credential (TOTP at ``at``, default now; HOTP at the card's next
        counter value, which the card moves on). A name costs one LIST to learn its type and
        period; a ``Credential`` from ``list()`` does not."""
        if isinstance(name, Credential):
            credential = name
        else:
            found = [c for c in self.list() if c.card_name == name]
            if not found:
                raise CredentialNotFound(SW.DATA_INVALID, f"no credential named {name!r}")
            credential = found[0]
        return self._calculate(credential.card_name, credential.oath_type, credential.period, at)

    def _calculate(self, card_name: str, oath_type: OathType, period: int, at: float | None) -> str:
        challenge = b""
        if oath_type is OathType.TOTP:
            challenge = time_challenge(self._clock() if at is None else at, period)
        answer = self._send(
            Ins.CALCULATE,
            0x00,
            P2_TRUNCATED,
            calculate_data(card_name, challenge),
            le=256,
            name=card_name,
        )
        return parse_calculate(answer).code

    def calculate_all(self, at: float | None = None) -> dict[str, str | None]:
        """Codes of all TOTP credentials at ``at`` (default now), by card name. HOTP
        credentials and those that need a touch map to None: ``calculate`` them one by one.
        The card computes every TOTP for a 30 s period; others are computed again singly."""
        at = self._clock() if at is None else at
        answer = self._send(
            Ins.CALCULATE_ALL,
            0x00,
            P2_TRUNCATED,
            calculate_all_data(time_challenge(at, DEFAULT_PERIOD)),
            le=256,
        )
        codes: dict[str, str | None] = {}
        for entry in parse_calculate_all(answer):
            if entry.response is None:
                codes[entry.card_name] = None
                continue
            _, period = split_card_name(entry.card_name, OathType.TOTP)
            if period == DEFAULT_PERIOD:
                codes[entry.card_name] = entry.response.code
            else:
                codes[entry.card_name] = self._calculate(entry.card_name, OathType.TOTP, period, at)
        return codes
