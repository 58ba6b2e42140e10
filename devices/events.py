"""What the drivers tell a person while they work: events a listener (the speech layer, a
screen, a log) turns into words. The drivers know nothing of how events are shown or spoken."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from devices.errors import (
    DeviceError,
    DeviceRemoved,
    DeviceTimeout,
    FidoPinBlocked,
    FidoPinInvalid,
    InvalidPin,
    NoCard,
    NoReader,
    PcscUnavailable,
    PinAuthBlocked,
    PinBlocked,
    PinRequired,
    TouchTimeout,
)


class DeviceEvent(StrEnum):
    INSERT_CARD = "insert_card"
    ENTER_PIN = "enter_pin"
    WRONG_PIN = "wrong_pin"  # params: tries_left
    PIN_BLOCKED = "pin_blocked"
    CARD_BLOCKED = "card_blocked"
    TOUCH_KEY = "touch_key"
    KEY_REMOVED = "key_removed"
    CARD_REMOVED = "card_removed"
    READER_NOT_FOUND = "reader_not_found"
    TOKEN_NOT_FOUND = "token_not_found"  # noqa: S105 - an event name, not a secret
    TIMEOUT = "timeout"
    DONE = "done"
    CODE = "code"  # params: code
    ERROR = "error"  # params: message
    # Before a card signs a login: whom it is for and how it was opened.
    CONFIRM_LOGIN = "confirm_login"  # params: provider, level, began (HH:MM), in_browser


@dataclass(frozen=True)
class Event:
    kind: DeviceEvent
    params: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The sink of a caller that does not listen."""


def event_for_error(error: DeviceError, *, device: str = "card") -> Event:
    """The event that tells a person about ``error``; ``device`` is "card" or "key"."""
    if isinstance(error, InvalidPin | FidoPinInvalid):
        return Event(DeviceEvent.WRONG_PIN, {"tries_left": error.retries_left})
    if isinstance(error, PinBlocked) and "PUK" in str(error):
        return Event(DeviceEvent.CARD_BLOCKED)
    if isinstance(error, PinBlocked | FidoPinBlocked | PinAuthBlocked):
        return Event(DeviceEvent.PIN_BLOCKED)
    if isinstance(error, PinRequired):
        return Event(DeviceEvent.ENTER_PIN)
    if isinstance(error, DeviceRemoved):
        return Event(DeviceEvent.KEY_REMOVED if device == "key" else DeviceEvent.CARD_REMOVED)
    if isinstance(error, NoReader | PcscUnavailable):
        return Event(DeviceEvent.READER_NOT_FOUND)
    if isinstance(error, NoCard):
        return Event(DeviceEvent.TOKEN_NOT_FOUND if device == "key" else DeviceEvent.INSERT_CARD)
    if isinstance(error, TouchTimeout | DeviceTimeout):
        return Event(DeviceEvent.TIMEOUT)
    return Event(DeviceEvent.ERROR, {"message": str(error)})
