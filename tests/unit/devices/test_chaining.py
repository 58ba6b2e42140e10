"""Command chaining and 61xx response chaining (devices.protocol.chaining).

The host side (split_command, transmit, collect_response) is exercised against ``ToyCard``,
a small card that uses the module's own card side (CommandAssembler, ResponseChunker), so
both halves of the protocol meet each other rather than a mock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from devices.errors import MalformedApdu, WrongLength
from devices.protocol.apdu import (
    CLA_CHAINING,
    INS_GET_RESPONSE,
    SHORT_MAX_DATA,
    CommandApdu,
    ResponseApdu,
)
from devices.protocol.chaining import (
    MAX_CHAINED_RESPONSE,
    CommandAssembler,
    ResponseChunker,
    collect_response,
    split_command,
    transmit,
)
from devices.protocol.sw import SW

INS_PUT_DATA = 0xDB
INS_GET_DATA = 0xCB
INS_ECHO = 0xEE

Handler = Callable[[CommandApdu], tuple[bytes, int]]


def pattern(length: int, seed: int = 0) -> bytes:
    """Bytes where every position differs from its neighbours, so a dropped, duplicated or
    reordered chunk cannot go unnoticed."""
    return bytes((seed + i * 7 + i // 251) & 0xFF for i in range(length))


class ToyCard:
    """A card: joins chained commands, runs ``handler`` on whole commands, and returns long
    answers through 61xx / GET RESPONSE. Records every APDU it sees on the wire."""

    def __init__(self, handler: Handler, *, max_command: int = 65535) -> None:
        self.handler = handler
        self.assembler = CommandAssembler(max_length=max_command)
        self.chunker = ResponseChunker()
        self.wire: list[CommandApdu] = []
        self.commands: list[CommandApdu] = []

    def __call__(self, apdu: CommandApdu) -> ResponseApdu:
        # Every APDU a host sends must be encodable; pass it through the wire format.
        apdu = CommandApdu.decode(apdu.encode())
        self.wire.append(apdu)
        if apdu.ins == INS_GET_RESPONSE:
            return self.chunker.get_response(apdu.le)
        self.chunker.reset()
        try:
            whole = self.assembler.feed(apdu)
        except MalformedApdu:
            return ResponseApdu(b"", SW.WRONG_LENGTH)
        if whole is None:
            return ResponseApdu(b"", SW.SUCCESS)
        self.commands.append(whole)
        data, sw = self.handler(whole)
        return self.chunker.first(data, sw, whole.le, extended=whole.extended)


def echo(command: CommandApdu) -> tuple[bytes, int]:
    return command.data, SW.SUCCESS


def digest(command: CommandApdu) -> tuple[bytes, int]:
    return hashlib.sha256(command.data).digest(), SW.SUCCESS


def answer_with(data: bytes, sw: int = SW.SUCCESS) -> Handler:
    def handler(command: CommandApdu) -> tuple[bytes, int]:
        return data, sw

    return handler


# --- split_command -----------------------------------------------------------------------------


def test_split_command_returns_same_apdu_when_it_fits() -> None:
    apdu = CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(255), le=256)
    assert split_command(apdu) == [apdu]
    assert split_command(apdu)[0] is apdu


def test_split_command_returns_case1_unchanged() -> None:
    apdu = CommandApdu(0x00, 0xA4, 0x04, 0x00)
    assert split_command(apdu) == [apdu]


def test_split_command_chunks_1000_bytes_into_255_byte_pieces() -> None:
    data = pattern(1000)
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, data, le=256))
    assert [len(part.data) for part in parts] == [255, 255, 255, 235]
    assert b"".join(part.data for part in parts) == data


def test_split_command_sets_chaining_cla_on_all_but_last() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(1000)))
    assert [part.cla for part in parts] == [0x10, 0x10, 0x10, 0x00]
    assert [part.chained for part in parts] == [True, True, True, False]


def test_split_command_keeps_other_cla_bits_on_every_piece() -> None:
    parts = split_command(CommandApdu(0x0C, INS_PUT_DATA, 0x3F, 0xFF, pattern(600)))
    assert [part.cla for part in parts] == [0x1C, 0x1C, 0x0C]


def test_split_command_keeps_ins_p1_p2_on_every_piece() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(700)))
    assert {(part.ins, part.p1, part.p2) for part in parts} == {(INS_PUT_DATA, 0x3F, 0xFF)}


def test_split_command_puts_le_on_last_piece_only() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(1000), le=0x40))
    assert [part.le for part in parts] == [None, None, None, 0x40]


def test_split_command_caps_extended_le_at_256_on_last_piece() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(300), le=65536))
    assert [part.le for part in parts] == [None, 256]


def test_split_command_leaves_le_absent_when_absent() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(300)))
    assert [part.le for part in parts] == [None, None]


def test_split_command_produces_only_short_apdus() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(4000), le=4000))
    for part in parts:
        assert not part.needs_extended
        assert len(part.encode()) <= 4 + 1 + SHORT_MAX_DATA + 1


def test_split_command_has_no_empty_trailing_piece_at_exact_multiple() -> None:
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(510)))
    assert [len(part.data) for part in parts] == [255, 255]
    assert [part.cla for part in parts] == [0x10, 0x00]


def test_split_command_honours_custom_chunk_size() -> None:
    data = pattern(250)
    parts = split_command(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, data), chunk=100)
    assert [len(part.data) for part in parts] == [100, 100, 50]
    assert b"".join(part.data for part in parts) == data


def test_split_command_drops_extended_when_flag_set_on_small_apdu() -> None:
    apdu = CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(10), le=10, extended=True)
    parts = split_command(apdu)
    assert parts == [CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(10), le=10)]
    assert not parts[0].needs_extended


def test_split_command_sends_large_le_without_data_as_one_short_apdu() -> None:
    parts = split_command(CommandApdu(0x00, 0xB0, 0x00, 0x00, le=1000))
    assert parts == [CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256)]


# --- transmit and collect_response against ToyCard ---------------------------------------------


def test_transmit_delivers_1000_byte_command_whole() -> None:
    data = pattern(1000, seed=3)
    card = ToyCard(digest)
    response = transmit(card, CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, data))
    assert response.check() == hashlib.sha256(data).digest()
    assert len(card.commands) == 1
    whole = card.commands[0]
    assert whole.data == data
    assert whole.cla == 0x00
    assert (whole.ins, whole.p1, whole.p2) == (INS_PUT_DATA, 0x3F, 0xFF)
    assert [len(apdu.data) for apdu in card.wire] == [255, 255, 255, 235]
    assert not card.assembler.in_progress


def test_transmit_returns_1000_byte_answer_whole_via_get_response() -> None:
    answer = pattern(1000, seed=9)
    card = ToyCard(answer_with(answer))
    response = transmit(card, CommandApdu(0x00, INS_GET_DATA, 0x3F, 0xFF, b"\x5c\x01\x7e"))
    assert response.sw == SW.SUCCESS
    assert response.data == answer
    get_responses = [apdu for apdu in card.wire if apdu.ins == INS_GET_RESPONSE]
    assert len(get_responses) == 3  # 256 with the answer, then 256 + 256 + 232
    assert [apdu.le for apdu in get_responses] == [256, 256, 232]


def test_transmit_round_trips_1000_bytes_each_way() -> None:
    data = pattern(1000, seed=77)
    card = ToyCard(echo)
    response = transmit(card, CommandApdu(0x00, INS_ECHO, 0x00, 0x00, data, le=256))
    assert response.check() == data
    assert card.commands[0].data == data


def test_transmit_keeps_final_status_word_after_chained_answer() -> None:
    answer = pattern(600)
    card = ToyCard(answer_with(answer, sw=0x6282))
    response = transmit(card, CommandApdu(0x00, INS_GET_DATA, 0x3F, 0xFF, b"\x5c\x01\x7e"))
    assert response.data == answer
    assert response.sw == 0x6282


def test_transmit_sends_get_response_with_base_cla() -> None:
    card = ToyCard(echo)
    transmit(card, CommandApdu(0x0C, INS_ECHO, 0x00, 0x00, pattern(700)))
    get_responses = [apdu for apdu in card.wire if apdu.ins == INS_GET_RESPONSE]
    assert get_responses
    assert {apdu.cla for apdu in get_responses} == {0x0C}
    assert all(not apdu.cla & CLA_CHAINING for apdu in get_responses)


def test_transmit_extended_sends_one_apdu_and_gets_whole_answer() -> None:
    data = pattern(1000, seed=5)
    card = ToyCard(echo)
    response = transmit(
        card, CommandApdu(0x00, INS_ECHO, 0x00, 0x00, data, le=65536), extended=True
    )
    assert response.check() == data
    assert len(card.wire) == 1
    assert card.wire[0].extended
    assert card.wire[0].data == data


def test_transmit_short_answer_needs_no_get_response() -> None:
    card = ToyCard(answer_with(b"\x01\x02"))
    response = transmit(card, CommandApdu(0x00, INS_GET_DATA, 0x3F, 0xFF, b"\x5c\x01\x7e"))
    assert response == ResponseApdu(b"\x01\x02", SW.SUCCESS)
    assert len(card.wire) == 1


def test_transmit_returns_answer_of_exactly_256_bytes_without_get_response() -> None:
    card = ToyCard(answer_with(pattern(256)))
    response = transmit(card, CommandApdu(0x00, INS_GET_DATA, 0x3F, 0xFF, b"\x5c\x01\x7e"))
    assert response.data == pattern(256)
    assert len(card.wire) == 1


def test_transmit_stops_chain_at_error_mid_chain() -> None:
    # The card accepts at most 300 bytes of chained data; the second piece overflows it.
    card = ToyCard(echo, max_command=300)
    response = transmit(card, CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(1000)))
    assert response.sw == SW.WRONG_LENGTH
    assert len(card.wire) == 2
    assert card.commands == []
    with pytest.raises(WrongLength):
        response.check()


def test_transmit_reports_error_from_last_piece() -> None:
    card = ToyCard(answer_with(b"", SW.SECURITY_STATUS_NOT_SATISFIED))
    response = transmit(card, CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(600)))
    assert response == ResponseApdu(b"", SW.SECURITY_STATUS_NOT_SATISFIED)
    assert len(card.wire) == 3


def test_transmit_stops_when_card_rejects_chaining() -> None:
    sent: list[CommandApdu] = []

    def card(apdu: CommandApdu) -> ResponseApdu:
        sent.append(apdu)
        if apdu.chained:
            return ResponseApdu(b"", SW.COMMAND_CHAINING_NOT_SUPPORTED)
        return ResponseApdu(b"", SW.SUCCESS)

    response = transmit(card, CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(1000)))
    assert response.sw == SW.COMMAND_CHAINING_NOT_SUPPORTED
    assert len(sent) == 1


def test_collect_response_returns_first_unchanged_without_61xx() -> None:
    def card(apdu: CommandApdu) -> ResponseApdu:
        raise AssertionError(f"nothing should be sent, got {apdu!r}")

    first = ResponseApdu(b"\xaa", 0x6A82)
    assert collect_response(card, first) == first


def test_collect_response_asks_for_sw2_bytes_and_joins_chunks() -> None:
    chunker = ResponseChunker()
    answer = pattern(300)
    first = chunker.first(answer, SW.SUCCESS, None, extended=False)
    assert first.sw == 0x612C
    asked: list[int | None] = []

    def card(apdu: CommandApdu) -> ResponseApdu:
        assert apdu.ins == INS_GET_RESPONSE
        asked.append(apdu.le)
        return chunker.get_response(apdu.le)

    response = collect_response(card, first, cla=0x00)
    assert response == ResponseApdu(answer, SW.SUCCESS)
    assert asked == [0x2C]


def test_collect_response_raises_malformed_apdu_when_61xx_never_ends() -> None:
    calls = 0

    def card(apdu: CommandApdu) -> ResponseApdu:
        nonlocal calls
        calls += 1
        return ResponseApdu(pattern(256), 0x6100)

    with pytest.raises(MalformedApdu) as caught:
        collect_response(card, ResponseApdu(b"", 0x6100))
    assert caught.value.field == "sw"
    assert calls <= MAX_CHAINED_RESPONSE // 256 + 1


class CardKeptAsking(Exception):
    """Raised by a test card when the host sends far more GET RESPONSEs than it should."""


def test_collect_response_raises_malformed_apdu_when_empty_61xx_never_ends() -> None:
    # A card that answers every GET RESPONSE with 6110 and no data. The host must give up
    # with MalformedApdu; this card stops the test (instead of hanging) if it never does.
    budget = 4 * (MAX_CHAINED_RESPONSE // 256) + 1000
    calls = 0

    def card(apdu: CommandApdu) -> ResponseApdu:
        nonlocal calls
        calls += 1
        if calls > budget:
            raise CardKeptAsking(f"host sent {calls} GET RESPONSEs to an empty 61xx card")
        return ResponseApdu(b"", 0x6110)

    with pytest.raises(MalformedApdu):
        collect_response(card, ResponseApdu(b"", 0x6110))


# --- CommandAssembler --------------------------------------------------------------------------


def test_assembler_returns_none_until_chain_ends() -> None:
    assembler = CommandAssembler()
    assert assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, b"ab")) is None
    assert assembler.in_progress
    assert assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, b"cd")) is None
    whole = assembler.feed(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, b"ef", le=7))
    assert whole == CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, b"abcdef", le=7)
    assert not assembler.in_progress


def test_assembler_passes_unchained_command_through() -> None:
    assembler = CommandAssembler()
    apdu = CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\xa0\x00", le=256)
    assert assembler.feed(apdu) == apdu
    assert not assembler.in_progress


def test_assembler_clears_chaining_bit_but_keeps_other_cla_bits() -> None:
    assembler = CommandAssembler()
    assembler.feed(CommandApdu(0x1C, INS_PUT_DATA, 0x3F, 0xFF, b"ab"))
    whole = assembler.feed(CommandApdu(0x1C, INS_PUT_DATA, 0x3F, 0xFF, b"cd"))
    assert whole is None
    whole = assembler.feed(CommandApdu(0x0C, INS_PUT_DATA, 0x3F, 0xFF, b"ef"))
    assert whole is not None
    assert whole.cla == 0x0C
    assert whole.data == b"abcdef"


def test_assembler_abandons_chain_when_different_ins_interrupts() -> None:
    assembler = CommandAssembler()
    assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, b"stale"))
    interrupting = CommandApdu(0x00, INS_GET_DATA, 0x3F, 0xFF, b"\x5c\x01\x7e", le=256)
    assert assembler.feed(interrupting) == interrupting
    assert not assembler.in_progress
    # The abandoned data must not leak into the next command with the first INS.
    whole = assembler.feed(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, b"fresh"))
    assert whole == CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, b"fresh")


def test_assembler_abandons_chain_when_p2_differs() -> None:
    assembler = CommandAssembler()
    assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, b"stale"))
    whole = assembler.feed(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFE, b"new"))
    assert whole == CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFE, b"new")


def test_assembler_starts_new_chain_when_chained_command_interrupts() -> None:
    assembler = CommandAssembler()
    assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, b"stale"))
    assert assembler.feed(CommandApdu(0x10, INS_ECHO, 0x00, 0x00, b"one")) is None
    assert assembler.in_progress
    whole = assembler.feed(CommandApdu(0x00, INS_ECHO, 0x00, 0x00, b"two"))
    assert whole == CommandApdu(0x00, INS_ECHO, 0x00, 0x00, b"onetwo")


def test_assembler_rejects_chain_longer_than_max_length() -> None:
    assembler = CommandAssembler(max_length=500)
    assert assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, pattern(255))) is None
    with pytest.raises(MalformedApdu) as caught:
        assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, pattern(246)))
    assert caught.value.field == "data"
    assert not assembler.in_progress
    # After the rejection the assembler starts clean.
    apdu = CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, b"ok")
    assert assembler.feed(apdu) == apdu


def test_assembler_accepts_chain_of_exactly_max_length() -> None:
    assembler = CommandAssembler(max_length=500)
    assert assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, pattern(255))) is None
    whole = assembler.feed(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(245, seed=1)))
    assert whole is not None
    assert whole.data == pattern(255) + pattern(245, seed=1)


def test_assembler_rejects_single_command_longer_than_max_length() -> None:
    assembler = CommandAssembler(max_length=10)
    with pytest.raises(MalformedApdu) as caught:
        assembler.feed(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, pattern(11)))
    assert caught.value.field == "data"


def test_assembler_reset_discards_partial_chain() -> None:
    assembler = CommandAssembler()
    assembler.feed(CommandApdu(0x10, INS_PUT_DATA, 0x3F, 0xFF, b"stale"))
    assembler.reset()
    assert not assembler.in_progress
    whole = assembler.feed(CommandApdu(0x00, INS_PUT_DATA, 0x3F, 0xFF, b"new"))
    assert whole is not None
    assert whole.data == b"new"


# --- ResponseChunker ---------------------------------------------------------------------------


def test_chunker_returns_short_answer_in_one_piece() -> None:
    chunker = ResponseChunker()
    assert chunker.first(b"abc", SW.SUCCESS, None, extended=False) == ResponseApdu(
        b"abc", SW.SUCCESS
    )
    assert chunker.get_response(256).sw == SW.CONDITIONS_NOT_SATISFIED


def test_chunker_honours_short_le_on_first_piece() -> None:
    chunker = ResponseChunker()
    first = chunker.first(pattern(100), SW.SUCCESS, 10, extended=False)
    assert first == ResponseApdu(pattern(100)[:10], 0x615A)
    rest = chunker.get_response(0x5A)
    assert rest == ResponseApdu(pattern(100)[10:], SW.SUCCESS)


def test_chunker_reports_256_or_more_remaining_as_6100() -> None:
    chunker = ResponseChunker()
    first = chunker.first(pattern(1000), SW.SUCCESS, 256, extended=False)
    assert first.data == pattern(1000)[:256]
    assert first.sw == 0x6100
    second = chunker.get_response(256)
    assert second.sw == 0x6100  # 488 remain
    third = chunker.get_response(256)
    assert third.sw == 0x61E8  # 232 remain
    last = chunker.get_response(256)
    assert last.sw == SW.SUCCESS
    assert first.data + second.data + third.data + last.data == pattern(1000)


def test_chunker_extended_first_returns_up_to_le() -> None:
    chunker = ResponseChunker()
    assert chunker.first(pattern(1000), SW.SUCCESS, None, extended=True).data == pattern(1000)
    first = chunker.first(pattern(1000), SW.SUCCESS, 600, extended=True)
    assert first.data == pattern(1000)[:600]
    assert first.sw == 0x6100  # 400 remain: 256 or more
    assert chunker.get_response(256) == ResponseApdu(pattern(1000)[600:856], 0x6190)
    assert chunker.get_response(0x90) == ResponseApdu(pattern(1000)[856:], SW.SUCCESS)
