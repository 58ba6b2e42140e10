"""USB HID boot keyboard reports and keyboard layouts, with no I/O: how an OTP token "types" its
code as key-down and key-up reports, and how a host turns those reports back into text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag, unique
from types import MappingProxyType

from devices.protocol.errors import MalformedReport, UnknownCharacter, UnknownLayout

REPORT_SIZE = 8
MAX_KEYS = 6  # a boot report's six key slots (6-key rollover)

KEY_ERROR_ROLLOVER = 0x01  # every slot holds this when more keys are down than fit
KEY_POST_FAIL = 0x02
KEY_ERROR_UNDEFINED = 0x03
KEY_ENTER = 0x28

# A report carries keys, not characters; the host's layout picks the character. Tokens type
# modhex because these sixteen letters sit on the same unshifted keys in most layouts, while
# punctuation, shifted symbols and (on AZERTY) even the digits move.
MODHEX = "cbdefghijklnrtuv"


@unique
class Modifier(IntFlag):
    """The modifier byte of a boot report (HID Usage Tables, usages E0..E7)."""

    LCTRL = 0x01
    LSHIFT = 0x02
    LALT = 0x04
    LGUI = 0x08
    RCTRL = 0x10
    RSHIFT = 0x20
    RALT = 0x40  # AltGr on layouts that have it
    RGUI = 0x80


MOD_LCTRL = int(Modifier.LCTRL)
MOD_LSHIFT = int(Modifier.LSHIFT)
MOD_LALT = int(Modifier.LALT)
MOD_LGUI = int(Modifier.LGUI)
MOD_RCTRL = int(Modifier.RCTRL)
MOD_RSHIFT = int(Modifier.RSHIFT)
MOD_RALT = int(Modifier.RALT)
MOD_RGUI = int(Modifier.RGUI)

_SHIFT = MOD_LSHIFT | MOD_RSHIFT
# With Ctrl, left Alt or GUI down a key is a shortcut, not text.
_SHORTCUT = MOD_LCTRL | MOD_RCTRL | MOD_LALT | MOD_LGUI | MOD_RGUI
# The modifiers of each level: plain, Shift, AltGr, Shift+AltGr.
_LEVEL_MODIFIERS = (0, MOD_LSHIFT, MOD_RALT, MOD_LSHIFT | MOD_RALT)


@dataclass(frozen=True, slots=True)
class KeyReport:
    """One boot keyboard input report: the modifier bits and the usage IDs of the keys down."""

    modifiers: int
    keys: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.modifiers <= 0xFF:
            raise MalformedReport(
                f"modifiers must be one byte, got {self.modifiers}", field="modifiers"
            )
        if len(self.keys) > MAX_KEYS:
            raise MalformedReport(
                f"a boot report holds at most {MAX_KEYS} keys, got {len(self.keys)}", field="keys"
            )
        for key in self.keys:
            if not 1 <= key <= 0xFF:
                raise MalformedReport(f"key usage {key} is out of range 1..255", field="keys")

    @property
    def released(self) -> bool:
        """True when no key and no modifier is down."""
        return not self.keys and not self.modifiers

    def encode(self) -> bytes:
        return bytes((self.modifiers, 0, *self.keys)).ljust(REPORT_SIZE, b"\0")

    @classmethod
    def decode(cls, raw: bytes) -> KeyReport:
        """Parse an 8-byte report; raises ``MalformedReport`` naming the bad field. A report
        with key error usages (the ErrorRollOver report of too many keys) carries no keys the
        host can trust, so it is refused too."""
        if len(raw) != REPORT_SIZE:
            raise MalformedReport(
                f"a boot keyboard report is {REPORT_SIZE} bytes, got {len(raw)}", field="length"
            )
        if raw[1] != 0:
            raise MalformedReport(
                f"the reserved byte must be 0, got 0x{raw[1]:02X}", field="reserved"
            )
        slots = bytes(raw[2:])
        if all(slot == KEY_ERROR_ROLLOVER for slot in slots):
            raise MalformedReport(
                "the keyboard reports rollover (too many keys down at once)", field="keys"
            )
        if any(KEY_ERROR_ROLLOVER <= slot <= KEY_ERROR_UNDEFINED for slot in slots):
            raise MalformedReport(f"key slots hold an error usage: {slots.hex(' ')}", field="keys")
        return cls(raw[0], tuple(slot for slot in slots if slot))


RELEASED = KeyReport(0).encode()


@dataclass(frozen=True, slots=True)
class Layout:
    """A keyboard layout: what each key types at each level (plain, Shift, AltGr,
    Shift+AltGr). ``keys`` maps a usage ID to those characters, None where the key types
    nothing printable, such as a dead key. Where several keystrokes give a character,
    ``keystroke`` picks the lowest level, then the key listed first. Layouts compare by name.

    Enter always types "\\n". Caps Lock, Num Lock and the keypad are not modelled: tokens do
    not use them."""

    name: str
    keys: Mapping[int, tuple[str | None, ...]] = field(repr=False, compare=False)
    _strokes: Mapping[str, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A bad table is a programming error, hence ValueError rather than a DeviceError.
        for usage, chars in self.keys.items():
            if not 0x04 <= usage <= 0xDF or usage == KEY_ENTER:
                raise ValueError(f"layout {self.name!r}: usage 0x{usage:02X} is not a text key")
            if not 1 <= len(chars) <= len(_LEVEL_MODIFIERS):
                raise ValueError(f"layout {self.name!r}: usage 0x{usage:02X} needs 1 to 4 levels")
            for char in chars:
                if char is not None and (len(char) != 1 or not char.isprintable()):
                    raise ValueError(f"layout {self.name!r}: {char!r} is not one printable char")
        strokes: dict[str, tuple[int, int]] = {"\n": (0, KEY_ENTER)}
        for level, modifiers in enumerate(_LEVEL_MODIFIERS):
            for usage, chars in self.keys.items():
                char = chars[level] if level < len(chars) else None
                if char is not None:
                    strokes.setdefault(char, (modifiers, usage))
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "_strokes", MappingProxyType(strokes))

    @property
    def characters(self) -> frozenset[str]:
        """Every character the layout can type with one keystroke, "\\n" (Enter) included."""
        return frozenset(self._strokes)

    def keystroke(self, char: str) -> tuple[int, int]:
        """The (modifiers, usage ID) that types ``char``; raises ``UnknownCharacter``."""
        try:
            return self._strokes[char]
        except KeyError:
            raise UnknownCharacter(char, self.name) from None

    def character(self, modifiers: int, usage: int) -> str | None:
        """What pressing ``usage`` with ``modifiers`` down types: one printable character,
        "\\n" for Enter, or None (modifier-only, dead, unmapped or shortcut keys)."""
        if usage == KEY_ENTER:
            return "\n"
        if modifiers & _SHORTCUT:
            return None
        chars = self.keys.get(usage)
        level = (1 if modifiers & _SHIFT else 0) + (2 if modifiers & MOD_RALT else 0)
        if chars is None or level >= len(chars):
            return None
        return chars[level]


def _letters(altgr: Mapping[str, str] | None = None) -> dict[int, tuple[str | None, ...]]:
    keys: dict[int, tuple[str | None, ...]] = {}
    for offset, letter in enumerate("abcdefghijklmnopqrstuvwxyz"):
        extra = (altgr or {}).get(letter)
        keys[0x04 + offset] = (letter, letter.upper(), extra) if extra else (letter, letter.upper())
    return keys


def _digit_row(shifted: str, altgr: str = "") -> dict[int, tuple[str | None, ...]]:
    """The digits 1..9, 0 (usages 1E..27) with their Shift and AltGr characters ("." = none)."""
    keys: dict[int, tuple[str | None, ...]] = {}
    for offset, digit in enumerate("1234567890"):
        level3 = altgr[offset] if altgr and altgr[offset] != "." else None
        keys[0x1E + offset] = (
            (digit, shifted[offset], level3) if level3 else (digit, shifted[offset])
        )
    return keys


# US ANSI (Windows "US", xkb "us"). The ISO keys 32 and 64 type what the backslash key does.
US = Layout(
    "us",
    {
        **_letters(),
        **_digit_row("!@#$%^&*()"),
        0x2C: (" ", " "),
        0x2D: ("-", "_"),
        0x2E: ("=", "+"),
        0x2F: ("[", "{"),
        0x30: ("]", "}"),
        0x31: ("\\", "|"),
        0x32: ("\\", "|"),
        0x33: (";", ":"),
        0x34: ("'", '"'),
        0x35: ("`", "~"),
        0x36: (",", "<"),
        0x37: (".", ">"),
        0x38: ("/", "?"),
        0x64: ("\\", "|"),
    },
)

# Danish ISO (Windows KBDDA, xkb "dk"). Acute, grave, diaeresis, circumflex and tilde are dead
# keys: they type nothing by themselves, so ^ ` ~ have no single keystroke here. Usage 31 types
# what the ISO key 32 next to Enter does, as on Windows and Linux.
DANISH = Layout(
    "da",
    {
        **_letters({"e": "€", "m": "µ"}),
        **_digit_row('!"#¤%&/()=', ".@£$€.{[]}"),
        0x2C: (" ", " "),
        0x2D: ("+", "?"),
        0x2E: (None, None, "|"),  # dead acute and grave
        0x2F: ("å", "Å"),
        0x30: (None, None, None),  # dead diaeresis, circumflex and tilde
        0x32: ("'", "*"),
        0x31: ("'", "*"),
        0x33: ("æ", "Æ"),
        0x34: ("ø", "Ø"),
        0x35: ("½", "§"),
        0x36: (",", ";"),
        0x37: (".", ":"),
        0x38: ("-", "_"),
        0x64: ("<", ">", "\\"),
    },
)

LAYOUTS: dict[str, Layout] = {"us": US, "da": DANISH}


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (case-insensitive); raises ``UnknownLayout``."""
    try:
        return LAYOUTS[name.lower()]
    except KeyError:
        raise UnknownLayout(name, LAYOUTS) from None


def type_text(text: str, layout: Layout) -> list[bytes]:
    """The reports a token sends to type ``text`` on a host set to ``layout``: per character a
    key-down report and a key-up (all-zero) report, so repeated characters register. "\\n" is
    Enter. Raises ``UnknownCharacter`` before any report is made."""
    reports: list[bytes] = []
    for char in text:
        modifiers, usage = layout.keystroke(char)
        reports.append(KeyReport(modifiers, (usage,)).encode())
        reports.append(RELEASED)
    return reports


class KeyboardDecoder:
    """Host side: turns a token's reports into lines of text with one layout.

    A key types once, in the report where it goes down (is newly present); holding it or
    releasing it types nothing. A malformed report raises and leaves the state unchanged."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._down: frozenset[int] = frozenset()
        self._typed: list[str] = []

    @property
    def pending(self) -> str:
        """What was typed since the last Enter."""
        return "".join(self._typed)

    def reset(self) -> None:
        self._down = frozenset()
        self._typed = []

    def feed(self, raw: bytes) -> str | None:
        """The finished line (without its newline) when Enter goes down in this report, else
        None. Keys that go down after Enter in the same report start the next line."""
        report = KeyReport.decode(raw)
        line: str | None = None
        for usage in dict.fromkeys(report.keys):
            if usage in self._down:
                continue
            char = self.layout.character(report.modifiers, usage)
            if char == "\n":
                line, self._typed = "".join(self._typed), []
            elif char is not None:
                self._typed.append(char)
        self._down = frozenset(report.keys)
        return line
