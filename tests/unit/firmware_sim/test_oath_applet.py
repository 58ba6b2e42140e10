"""The simulated OATH applet (YKOATH) byte by byte through a strict card, with APDUs built by hand
(not with the host codec), and the runtime's support for an applet's own GET RESPONSE."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from devices.protocol.apdu import CommandApdu
from firmware_sim.state import StateError
from firmware_sim.tokens import piv
from firmware_sim.tokens.card import SimulatedCard, build_atr
from firmware_sim.tokens.oath import (
    MAX_CREDENTIALS,
    OathApplet,
    OathState,
    file_persister,
    load_applet,
    make_card,
    new_oath_state,
)

AID = bytes.fromhex("A000000527210101")
SHORT_AID = AID[:7]  # what Yubico's tools select
SEED_SHA1 = b"12345678901234567890"
SEED_SHA256 = b"12345678901234567890123456789012"
SEED_SHA512 = b"1234567890" * 6 + b"1234"
# RFC 4226 appendix D: HOTP values for counters 0..9 with SEED_SHA1.
HOTP_RFC4226 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]
TOTP, HOTP = 0x20, 0x10
SHA1, SHA256, SHA512 = 0x01, 0x02, 0x03
HASHES = {SHA1: "sha1", SHA256: "sha256", SHA512: "sha512"}


# --- helpers -----------------------------------------------------------------------------------


def tlv(tag: int, value: bytes) -> bytes:
    assert len(value) < 0x100
    length = bytes((len(value),)) if len(value) < 0x80 else bytes((0x81, len(value)))
    return bytes((tag,)) + length + value


def reference_hmac(seed: bytes, message: bytes, algorithm: int = SHA1) -> bytes:
    return hmac.new(seed, message, HASHES[algorithm]).digest()


def reference_truncate(digest: bytes) -> int:
    offset = digest[-1] & 0x0F
    return int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF


def reference_code(seed: bytes, counter: int, digits: int, algorithm: int = SHA1) -> str:
    value = reference_truncate(reference_hmac(seed, counter.to_bytes(8, "big"), algorithm))
    return str(value % 10**digits).zfill(digits)


def put_body(
    name: bytes,
    *,
    kind: int = TOTP,
    algorithm: int = SHA1,
    digits: int = 6,
    key: bytes = SEED_SHA1,
    extra: bytes = b"",
) -> bytes:
    return tlv(0x71, name) + tlv(0x73, bytes((kind | algorithm, digits)) + key) + extra


class Terminal:
    """Sends raw APDUs to a card and splits the answer into data and status word."""

    def __init__(self, card: SimulatedCard) -> None:
        self.card = card

    def send(
        self, ins: int, p1: int = 0, p2: int = 0, data: bytes = b"", le: int | None = None
    ) -> tuple[bytes, int]:
        answer = self.card.transmit(CommandApdu(0x00, ins, p1, p2, data, le=le).encode())
        assert len(answer) >= 2
        return answer[:-2], int.from_bytes(answer[-2:], "big")

    def collect(self, first: tuple[bytes, int], ins: int) -> tuple[bytes, int]:
        """Follow 61xx with ``ins`` (C0 GET RESPONSE or A5 SEND REMAINING)."""
        data, sw = first
        collected = bytearray(data)
        while sw >> 8 == 0x61:
            data, sw = self.send(ins)
            collected += data
        return bytes(collected), sw

    def select(self, aid: bytes = AID) -> bytes:
        answer, sw = self.send(0xA4, 0x04, 0x00, aid, le=256)
        assert sw == 0x9000
        return answer

    def put(self, body: bytes) -> int:
        return self.send(0x01, 0x00, 0x00, body)[1]

    def calculate(self, name: bytes, challenge: bytes | None, p2: int = 0x01) -> tuple[bytes, int]:
        data = tlv(0x71, name) + (b"" if challenge is None else tlv(0x74, challenge))
        return self.send(0xA2, 0x00, p2, data, le=256)

    def code(self, name: bytes, challenge: bytes | None = b"") -> str:
        """A truncated CALCULATE, read as the code (checks the 76 framing on the way)."""
        answer, sw = self.calculate(name, challenge)
        assert sw == 0x9000
        assert answer[:2] == b"\x76\x05"
        digits = answer[2]
        value = int.from_bytes(answer[3:], "big") & 0x7FFFFFFF
        return str(value % 10**digits).zfill(digits)

    def list_all(self, ins: int = 0xC0) -> bytes:
        answer, sw = self.collect(self.send(0xA1, le=256), ins)
        assert sw == 0x9000
        return answer


def counter_challenge(at: int, period: int = 30) -> bytes:
    return (at // period).to_bytes(8, "big")


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "oath.json"


@pytest.fixture
def applet(state_path: Path) -> OathApplet:
    return new_oath_state(state_path, credentials=[])


@pytest.fixture
def card(applet: OathApplet) -> SimulatedCard:
    simulated = make_card(applet, strict=True)
    simulated.power_on()
    return simulated


@pytest.fixture
def term(card: SimulatedCard) -> Terminal:
    terminal = Terminal(card)
    terminal.select()
    return terminal


def touch_card(state_path: Path, answer: Callable[[], bool]) -> Terminal:
    simulated = make_card(load_applet(state_path, touch=answer), strict=True)
    simulated.power_on()
    terminal = Terminal(simulated)
    terminal.select()
    return terminal


# --- SELECT and the card -----------------------------------------------------------------------


@pytest.mark.parametrize("aid", [AID, SHORT_AID], ids=["full-aid", "yubico-aid"])
def test_select_answers_version_and_salt_without_challenge(
    card: SimulatedCard, applet: OathApplet, aid: bytes
) -> None:
    answer = Terminal(card).select(aid)

    assert answer == b"\x79\x03\x05\x02\x00" + b"\x71\x08" + applet.state.salt


def test_card_has_contactless_atr_with_akkreditiv_historical_bytes(applet: OathApplet) -> None:
    historical = b"\x80\x5a" + b"akkreditiv"

    assert make_card(applet).atr == build_atr(historical, contactless=True)
    assert make_card(applet).atr[:4] == bytes((0x3B, 0x80 | len(historical), 0x80, 0x01))
    assert make_card(applet, contactless=False).atr == build_atr(historical)


def test_unknown_instruction_and_class_are_refused(term: Terminal) -> None:
    assert term.send(0xB0)[1] == 0x6D00
    assert term.send(0xA1, 0x00, 0x00)[1] == 0x9000
    answer = term.card.transmit(bytes.fromhex("80A10000"))
    assert answer == b"\x6e\x00"


# --- PUT, LIST, DELETE -------------------------------------------------------------------------


def test_put_then_list_answers_type_algorithm_and_name(term: Terminal) -> None:
    assert term.put(put_body(b"issuer:alice")) == 0x9000
    assert term.put(put_body(b"h", kind=HOTP, algorithm=SHA256, key=SEED_SHA256)) == 0x9000
    assert term.put(put_body(b"60/long", algorithm=SHA512, digits=8, key=SEED_SHA512)) == 0x9000

    answer, sw = term.send(0xA1, le=256)

    assert sw == 0x9000
    assert answer == (b"\x72\x0d\x21issuer:alice" + b"\x72\x02\x12h" + b"\x72\x08\x2360/long")


def test_put_with_same_name_replaces_in_place(term: Terminal, applet: OathApplet) -> None:
    term.put(put_body(b"a"))
    term.put(put_body(b"b"))

    assert term.put(put_body(b"a", kind=HOTP, digits=8)) == 0x9000

    assert term.list_all() == b"\x72\x02\x11a" + b"\x72\x02\x21b"
    assert applet.state.credentials[b"a"].digits == 8


@pytest.mark.parametrize(
    "body",
    [
        put_body(b"x", digits=5),
        put_body(b"x", digits=9),
        put_body(b"x", key=SEED_SHA1[:13]),
        put_body(b"x", key=b"k" * 65),
        put_body(b"x", algorithm=SHA512, key=b"k" * 129),
        put_body(b"x", kind=0x30),
        put_body(b"x", algorithm=0x04),
        put_body(b""),
        tlv(0x71, b"n" * 65) + tlv(0x73, b"\x21\x06" + SEED_SHA1),
        tlv(0x71, b"x"),
        tlv(0x73, b"\x21\x06" + SEED_SHA1),
        put_body(b"x", extra=tlv(0x7A, b"\x00\x00\x00\x05")),  # an IMF for TOTP
        put_body(b"x", kind=HOTP, extra=tlv(0x7A, b"\x00\x05")),
        put_body(b"x", extra=b"\x78\x04"),  # unknown property bit
        put_body(b"x", extra=b"\x78"),  # property without its byte
        put_body(b"x", extra=tlv(0x7B, b"\x01")),
        put_body(b"x", extra=tlv(0x71, b"y")),
        put_body(b"x")[:-3],
        b"\x71\x81",
    ],
)
def test_put_refuses_bad_fields_with_wrong_data(
    term: Terminal, applet: OathApplet, body: bytes
) -> None:
    assert term.put(body) == 0x6A80
    assert applet.state.credentials == {}


def test_put_accepts_touch_property_and_two_byte_length(term: Terminal, applet: OathApplet) -> None:
    key = b"k" * 120
    body = tlv(0x71, b"t") + b"\x73\x81\x7a\x23\x06" + key + b"\x78\x02"

    assert term.put(body) == 0x9000

    stored = applet.state.credentials[b"t"]
    assert stored.touch
    assert stored.secret == key


def test_put_answers_no_space_when_full_but_still_replaces(term: Terminal) -> None:
    for index in range(MAX_CREDENTIALS):
        assert term.put(put_body(f"c{index}".encode())) == 0x9000

    assert term.put(put_body(b"one-more")) == 0x6A84
    assert term.put(put_body(b"c0", digits=7)) == 0x9000


def test_delete_removes_and_unknown_name_answers_6984(term: Terminal, state_path: Path) -> None:
    term.put(put_body(b"a"))
    term.put(put_body(b"b"))

    assert term.send(0x02, 0x00, 0x00, tlv(0x71, b"a"))[1] == 0x9000
    assert term.send(0x02, 0x00, 0x00, tlv(0x71, b"a"))[1] == 0x6984
    assert term.send(0x02, 0x00, 0x00, tlv(0x74, b"a"))[1] == 0x6A80

    assert term.list_all() == b"\x72\x02\x21b"
    assert [c["name"] for c in json.loads(state_path.read_text())["credentials"]] == [b"b".hex()]


# --- CALCULATE ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "seed", "expected"),
    [
        (SHA1, SEED_SHA1, "94287082"),
        (SHA256, SEED_SHA256, "46119246"),
        (SHA512, SEED_SHA512, "90693936"),
    ],
    ids=["sha1", "sha256", "sha512"],
)
def test_calculate_truncated_totp_matches_rfc6238_at_59(
    term: Terminal, algorithm: int, seed: bytes, expected: str
) -> None:
    term.put(put_body(b"rfc", algorithm=algorithm, digits=8, key=seed))

    answer, sw = term.calculate(b"rfc", counter_challenge(59))

    assert sw == 0x9000
    value = reference_truncate(reference_hmac(seed, counter_challenge(59), algorithm))
    assert answer == b"\x76\x05\x08" + value.to_bytes(4, "big")
    assert term.code(b"rfc", counter_challenge(59)) == expected


@pytest.mark.parametrize("algorithm", [SHA1, SHA256, SHA512])
def test_calculate_full_answers_digits_and_whole_hmac(term: Terminal, algorithm: int) -> None:
    seed = {SHA1: SEED_SHA1, SHA256: SEED_SHA256, SHA512: SEED_SHA512}[algorithm]
    term.put(put_body(b"full", algorithm=algorithm, key=seed))
    challenge = bytes.fromhex("0102030405060708")

    answer, sw = term.calculate(b"full", challenge, p2=0x00)

    digest = reference_hmac(seed, challenge, algorithm)
    assert sw == 0x9000
    assert answer == bytes((0x75, 1 + len(digest), 6)) + digest


def test_hotp_follows_rfc4226_and_saves_each_counter(term: Terminal, state_path: Path) -> None:
    term.put(put_body(b"hotp", kind=HOTP))

    for counter, expected in enumerate(HOTP_RFC4226):
        assert term.code(b"hotp", None) == expected
        saved = json.loads(state_path.read_text())["credentials"][0]["counter"]
        assert saved == counter + 1


def test_hotp_counter_survives_reload_and_power_cycle(term: Terminal, state_path: Path) -> None:
    term.put(put_body(b"hotp", kind=HOTP))
    assert [term.code(b"hotp") for _ in range(3)] == HOTP_RFC4226[:3]

    reloaded = make_card(load_applet(state_path), strict=True)
    reloaded.power_on()
    again = Terminal(reloaded)
    again.select()

    assert again.code(b"hotp") == HOTP_RFC4226[3]


def test_hotp_initial_moving_factor_sets_first_counter(term: Terminal) -> None:
    term.put(put_body(b"hotp", kind=HOTP, extra=tlv(0x7A, b"\x00\x00\x00\x05")))

    assert term.code(b"hotp") == HOTP_RFC4226[5]
    assert term.code(b"hotp", b"ignored challenge") == HOTP_RFC4226[6]


def test_hotp_code_is_not_given_when_the_counter_cannot_be_saved(
    term: Terminal, state_path: Path
) -> None:
    assert term.put(put_body(b"hotp", kind=HOTP)) == 0x9000

    def failing_persist(state: OathState) -> None:
        raise OSError("disk full")

    broken = OathApplet(OathState.from_json(json.loads(state_path.read_text())), failing_persist)
    card = make_card(broken)  # not strict: a firmware fault answers 6F00, as a card would
    card.power_on()
    terminal = Terminal(card)
    terminal.select()

    assert terminal.calculate(b"hotp", None) == (b"", 0x6F00)
    assert load_applet(state_path).state.credentials[b"hotp"].counter == 0


@pytest.mark.parametrize(
    ("data", "p1", "p2", "sw"),
    [
        (tlv(0x71, b"nobody") + tlv(0x74, b"12345678"), 0x00, 0x01, 0x6984),
        (tlv(0x71, b"totp"), 0x00, 0x01, 0x6A80),  # TOTP needs a challenge
        (tlv(0x71, b"totp") + tlv(0x74, b""), 0x00, 0x01, 0x6A80),
        (tlv(0x74, b"12345678"), 0x00, 0x01, 0x6A80),
        (tlv(0x71, b"totp") + tlv(0x74, b"12345678"), 0x00, 0x02, 0x6A86),
        (tlv(0x71, b"totp") + tlv(0x74, b"12345678"), 0x01, 0x01, 0x6A86),
        (b"\x71\x05ab", 0x00, 0x01, 0x6A80),
    ],
)
def test_calculate_refuses_bad_requests(
    term: Terminal, data: bytes, p1: int, p2: int, sw: int
) -> None:
    term.put(put_body(b"totp"))

    assert term.send(0xA2, p1, p2, data, le=256) == (b"", sw)


def test_touch_credential_needs_the_touch_and_keeps_counter_without_it(
    state_path: Path, applet: OathApplet
) -> None:
    term = Terminal(make_card(applet, strict=True))
    term.select()
    term.put(put_body(b"touch-hotp", kind=HOTP, extra=b"\x78\x02"))
    term.put(put_body(b"touch-totp", extra=b"\x78\x02"))

    untouched = touch_card(state_path, lambda: False)
    assert untouched.calculate(b"touch-hotp", None) == (b"", 0x6982)
    assert untouched.calculate(b"touch-totp", counter_challenge(59)) == (b"", 0x6982)
    assert load_applet(state_path).state.credentials[b"touch-hotp"].counter == 0

    touched = touch_card(state_path, lambda: True)
    assert touched.code(b"touch-hotp") == HOTP_RFC4226[0]
    assert touched.code(b"touch-totp", counter_challenge(59)) == reference_code(SEED_SHA1, 1, 6)


# --- CALCULATE ALL -----------------------------------------------------------------------------


def test_calculate_all_codes_totp_and_names_hotp_and_touch(
    term: Terminal, applet: OathApplet
) -> None:
    term.put(put_body(b"totp", digits=8))
    term.put(put_body(b"hotp", kind=HOTP, digits=7))
    term.put(put_body(b"touch", extra=b"\x78\x02"))
    term.put(put_body(b"60/slow", algorithm=SHA256, key=SEED_SHA256))
    challenge = counter_challenge(1111111109)

    answer, sw = term.send(0xA4, 0x00, 0x01, tlv(0x74, challenge), le=256)

    totp = reference_truncate(reference_hmac(SEED_SHA1, challenge)).to_bytes(4, "big")
    # The card has no periods: a 60 s credential gets the same (30 s) challenge.
    slow = reference_truncate(reference_hmac(SEED_SHA256, challenge, SHA256)).to_bytes(4, "big")
    assert sw == 0x9000
    assert answer == (
        tlv(0x71, b"totp") + tlv(0x76, b"\x08" + totp)
        + tlv(0x71, b"hotp") + tlv(0x77, b"\x07")
        + tlv(0x71, b"touch") + tlv(0x7C, b"\x06")
        + tlv(0x71, b"60/slow") + tlv(0x76, b"\x06" + slow)
    )  # fmt: skip
    assert applet.state.credentials[b"hotp"].counter == 0


def test_calculate_all_full_answers_whole_hmac(term: Terminal) -> None:
    term.put(put_body(b"totp"))
    challenge = counter_challenge(59)

    answer, sw = term.send(0xA4, 0x00, 0x00, tlv(0x74, challenge), le=256)

    assert sw == 0x9000
    assert answer == tlv(0x71, b"totp") + tlv(0x75, b"\x06" + reference_hmac(SEED_SHA1, challenge))


@pytest.mark.parametrize(
    ("p1", "p2", "data", "sw"),
    [
        (0x00, 0x01, b"", 0x6A80),
        (0x00, 0x01, tlv(0x71, b"x"), 0x6A80),
        (0x00, 0x03, tlv(0x74, b"12345678"), 0x6A86),
    ],
)
def test_calculate_all_refuses_bad_requests(
    term: Terminal, p1: int, p2: int, data: bytes, sw: int
) -> None:
    assert term.send(0xA4, p1, p2, data, le=256) == (b"", sw)


# --- long answers: GET RESPONSE and SEND REMAINING ---------------------------------------------


def thirty_names() -> list[bytes]:
    return [f"issuer-{n:02d}:someone.with.a.long.address@example.org".encode() for n in range(30)]


@pytest.mark.parametrize("ins", [0xC0, 0xA5], ids=["get-response", "send-remaining"])
def test_long_list_is_chained_and_collected_with_either_instruction(
    term: Terminal, ins: int
) -> None:
    names = thirty_names()
    for name in names:
        assert term.put(put_body(name)) == 0x9000
    expected = b"".join(b"\x72" + bytes((len(name) + 1,)) + b"\x21" + name for name in names)

    first, sw = term.send(0xA1, le=256)

    assert len(expected) > 3 * 256
    assert (first, sw) == (expected[:256], 0x6100)
    assert term.collect((first, sw), ins) == (expected, 0x9000)


def test_chained_parts_are_256_bytes_then_the_rest(term: Terminal) -> None:
    for name in thirty_names():
        term.put(put_body(name))
    total = len(term.list_all())

    parts = []
    data, sw = term.send(0xA1)
    parts.append((len(data), sw))
    while sw >> 8 == 0x61:
        data, sw = term.send(0xA5)  # no Le, as Yubico's tools send it
        parts.append((len(data), sw))

    expected = []
    left = total
    while left > 256:
        left -= 256
        expected.append((256, 0x6100 | min(left, 256) & 0xFF))
    assert parts == [*expected, (left, 0x9000)]
    assert len(parts) >= 4


def test_long_calculate_all_is_chained_through_send_remaining(term: Terminal) -> None:
    for name in thirty_names():
        term.put(put_body(name))
    challenge = counter_challenge(59)

    answer, sw = term.collect(term.send(0xA4, 0x00, 0x01, tlv(0x74, challenge)), 0xA5)

    value = reference_truncate(reference_hmac(SEED_SHA1, challenge)).to_bytes(4, "big")
    assert sw == 0x9000
    assert answer == b"".join(tlv(0x71, n) + tlv(0x76, b"\x06" + value) for n in thirty_names())


def test_send_remaining_with_nothing_waiting_answers_6985(term: Terminal) -> None:
    assert term.send(0xA5) == (b"", 0x6985)
    assert term.send(0xC0) == (b"", 0x6985)


class PlainApplet:
    """An applet that answers every command with 600 bytes and records what reached it."""

    aid = bytes.fromhex("F000000001")

    def __init__(self) -> None:
        self.seen: list[int] = []

    def select(self, apdu: CommandApdu) -> bytes:
        return b""

    def deselect(self) -> None:
        pass

    def process(self, apdu: CommandApdu) -> tuple[bytes, int]:
        self.seen.append(apdu.ins)
        return bytes(range(200)) * 3, 0x9000

    def power_reset(self) -> None:
        pass


class RemainingApplet(PlainApplet):
    get_response_ins = frozenset({0xA5})


def plain_card(applet: PlainApplet) -> Terminal:
    card = SimulatedCard(atr=build_atr(b""), applets=[applet], strict=True)
    card.power_on()
    terminal = Terminal(card)
    terminal.select(applet.aid)
    return terminal


def test_runtime_answers_an_applets_own_get_response_instruction() -> None:
    applet = RemainingApplet()
    term = plain_card(applet)

    answer = term.collect(term.send(0x10), 0xA5)

    assert answer == (bytes(range(200)) * 3, 0x9000)
    assert applet.seen == [0x10]


def test_runtime_passes_that_instruction_to_applets_that_do_not_name_it() -> None:
    applet = PlainApplet()
    term = plain_card(applet)

    first = term.send(0x10)
    second = term.send(0xA5)

    assert first == second == ((bytes(range(200)) * 3)[:256], 0x6100)
    assert applet.seen == [0x10, 0xA5]  # a new command: the pending answer was dropped
    assert term.collect(second, 0xC0) == (bytes(range(200)) * 3, 0x9000)


def test_piv_card_still_treats_send_remaining_as_unknown(tmp_path: Path) -> None:
    card = piv.make_card(piv.new_card_state(tmp_path / "piv.json"), strict=True)
    card.power_on()
    term = Terminal(card)
    term.select(bytes.fromhex("A000000308"))

    assert term.send(0xA5) == (b"", 0x6D00)


# --- access code -------------------------------------------------------------------------------

ACCESS_KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")


def set_code(term: Terminal, key: bytes = ACCESS_KEY, challenge: bytes = b"\x11" * 8) -> int:
    response = reference_hmac(key, challenge)
    body = tlv(0x73, b"\x21" + key) + tlv(0x74, challenge) + tlv(0x75, response)
    return term.send(0x03, 0x00, 0x00, body)[1]


def validate(term: Terminal, card_challenge: bytes, key: bytes = ACCESS_KEY) -> tuple[bytes, int]:
    host_challenge = b"\x22" * 8
    body = tlv(0x75, reference_hmac(key, card_challenge)) + tlv(0x74, host_challenge)
    return term.send(0xA3, 0x00, 0x00, body, le=256)


def select_challenge(term: Terminal) -> bytes:
    answer = term.select()
    assert answer[5:15] == b"\x71\x08" + answer[7:15]
    assert answer[15:17] == b"\x74\x08"
    assert answer[25:] == b"\x7b\x01\x01"
    return answer[17:25]


def test_access_code_locks_until_validate_answers_mutually(term: Terminal) -> None:
    term.put(put_body(b"totp"))
    assert set_code(term) == 0x9000
    assert term.send(0xA1, le=256) == (b"\x72\x05\x21totp", 0x9000)  # this session proved it

    challenge = select_challenge(term)
    assert term.send(0xA1, le=256) == (b"", 0x6982)
    assert term.send(0x01, 0x00, 0x00, put_body(b"x"))[1] == 0x6982
    assert term.calculate(b"totp", counter_challenge(59))[1] == 0x6982

    answer, sw = validate(term, challenge)

    assert sw == 0x9000
    assert answer == tlv(0x75, reference_hmac(ACCESS_KEY, b"\x22" * 8))
    assert term.send(0xA1, le=256) == (b"\x72\x05\x21totp", 0x9000)


def test_validate_gives_one_try_per_select(term: Terminal) -> None:
    set_code(term)
    challenge = select_challenge(term)

    assert validate(term, challenge, key=b"wrong key 16 byt") == (b"", 0x6984)
    assert validate(term, challenge) == (b"", 0x6984)

    assert validate(term, select_challenge(term))[1] == 0x9000


def test_access_code_survives_power_cycle_and_reset_clears_it(
    term: Terminal, state_path: Path
) -> None:
    term.put(put_body(b"totp"))
    set_code(term)
    card = make_card(load_applet(state_path), strict=True)
    card.power_on()
    again = Terminal(card)
    select_challenge(again)

    assert again.send(0x04, 0xDE, 0xAD) == (b"", 0x9000)

    answer = again.select()
    assert b"\x74\x08" not in answer
    assert again.send(0xA1, le=256) == (b"", 0x9000)


@pytest.mark.parametrize(
    "body",
    [
        tlv(0x73, b"\x21" + ACCESS_KEY) + tlv(0x74, b"\x11" * 8) + tlv(0x75, b"\x00" * 20),
        tlv(0x73, b"\x21" + ACCESS_KEY) + tlv(0x74, b"\x11" * 8),
        tlv(0x73, b"\x24" + ACCESS_KEY) + tlv(0x74, b"\x11" * 8) + tlv(0x75, b"\x00" * 20),
        tlv(0x73, b"\x21") + tlv(0x74, b"\x11" * 8) + tlv(0x75, reference_hmac(b"", b"\x11" * 8)),
        tlv(0x74, b"\x11" * 8),
        tlv(0x73, b"") + tlv(0x74, b"\x11" * 8),
    ],
)
def test_set_code_refuses_bad_data(term: Terminal, applet: OathApplet, body: bytes) -> None:
    assert term.send(0x03, 0x00, 0x00, body)[1] == 0x6A80
    assert applet.state.code_key is None


def test_set_code_with_empty_key_removes_the_code(term: Terminal) -> None:
    set_code(term)

    assert term.send(0x03, 0x00, 0x00, tlv(0x73, b""))[1] == 0x9000

    assert b"\x74" not in term.select()[15:]
    assert term.send(0xA1)[1] == 0x9000


def test_validate_without_an_access_code_answers_6984(term: Terminal) -> None:
    assert validate(term, b"\x00" * 8) == (b"", 0x6984)


# --- RESET and state ---------------------------------------------------------------------------


def test_reset_needs_dead_and_gives_a_new_salt(term: Terminal, applet: OathApplet) -> None:
    term.put(put_body(b"totp"))
    old_salt = applet.state.salt

    assert term.send(0x04, 0xDE, 0xAE) == (b"", 0x6A86)
    assert term.send(0x04, 0xDE, 0xAD) == (b"", 0x9000)

    assert term.list_all() == b""
    assert applet.state.salt != old_salt
    assert term.select()[7:] == applet.state.salt


def test_new_state_holds_one_demo_totp_credential(tmp_path: Path) -> None:
    applet = new_oath_state(tmp_path / "oath.json")

    ((name, stored),) = applet.state.credentials.items()
    assert name == b"akkreditiv:demo"
    assert (stored.oath_type, stored.algorithm, stored.digits) == (TOTP, SHA1, 6)
    assert len(stored.secret) == 20
    assert load_applet(tmp_path / "oath.json").state == applet.state
    with pytest.raises(StateError, match="exists already"):
        new_oath_state(tmp_path / "oath.json")


def test_state_file_is_kind_oath_and_damage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "oath.json"
    new_oath_state(path)
    document = json.loads(path.read_text())
    assert document["kind"] == "oath"

    document["credentials"][0]["digits"] = 12
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match="12 digits"):
        load_applet(path)
    piv.new_card_state(tmp_path / "piv.json")
    with pytest.raises(StateError, match="not 'oath'"):
        load_applet(tmp_path / "piv.json")


def test_state_is_written_atomically_through_the_persister(tmp_path: Path) -> None:
    path = tmp_path / "oath.json"
    file_persister(path)(OathState(salt=b"\x01" * 8))

    assert load_applet(path).state == OathState(salt=b"\x01" * 8)
    assert [p.name for p in tmp_path.iterdir()] == ["oath.json"]
