"""The audit hash chain: canonical records, chained hashes, and a verifier that tells altered,
removed, reordered and duplicated entries apart; secret-looking details are refused."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.services.audit_chain import (
    GENESIS,
    AuditRecord,
    JsonValue,
    chain,
    record_hash,
    validate_details,
    verify,
)
from server.services.errors import AuditChainBroken, AuditDetailsRefused, Breakage

Entry = tuple[AuditRecord, str, str]


def _record(seq: int, **details: JsonValue) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        at=f"2025-01-01T12:00:{seq % 60:02d}+00:00",
        event="credential.registered",
        actor="staff:42",
        subject="identity:6f1c2b1e",
        details=dict(details),
    )


def _entries(count: int, first_seq: int = 1, prev: str = GENESIS) -> list[Entry]:
    records = [_record(seq, kind="fido2", n=seq) for seq in range(first_seq, first_seq + count)]
    entries: list[Entry] = []
    for record, digest in chain(records, prev_hash=prev):
        entries.append((record, prev, digest))
        prev = digest
    return entries


def _anchor(entries: list[Entry]) -> tuple[int, str]:
    return entries[-1][0].seq, entries[-1][2]


def _broken(entries: list[Entry], **kwargs: Any) -> AuditChainBroken:
    with pytest.raises(AuditChainBroken) as caught:
        verify(entries, **kwargs)
    return caught.value


def test_canonical_is_sorted_compact_utf8_json() -> None:
    record = AuditRecord(1, "2025-01-01T00:00:00+00:00", "e", "a", "s", {"b": [1, None], "a": "ø"})
    assert (
        record.canonical()
        == (
            '{"actor":"a","at":"2025-01-01T00:00:00+00:00","details":{"a":"ø","b":[1,null]},'
            '"event":"e","seq":1,"subject":"s"}'
        ).encode()
    )


def test_hash_is_sha256_of_prev_hash_bytes_and_canonical_record() -> None:
    record = _record(1)
    expected = hashlib.sha256(bytes(32) + record.canonical()).hexdigest()
    assert record_hash(GENESIS, record) == expected
    assert chain([record]) == [(record, expected)]
    assert GENESIS == "0" * 64


def test_chain_links_each_hash_to_the_one_before() -> None:
    linked = chain([_record(1), _record(2), _record(3)])
    assert linked[1][1] == record_hash(linked[0][1], linked[1][0])
    assert linked[2][1] == record_hash(linked[1][1], linked[2][0])


def test_chain_refuses_a_gap_in_sequence_numbers() -> None:
    with pytest.raises(ValueError, match="does not follow"):
        chain([_record(1), _record(3)])


def test_verify_accepts_a_valid_chain() -> None:
    entries = _entries(5)
    verify(entries)
    verify(entries, anchor=_anchor(entries))
    verify([])


def test_verify_accepts_a_tail_from_a_trusted_entry() -> None:
    entries = _entries(6)
    seq, digest = entries[2][0].seq, entries[2][2]
    verify(entries[3:], start_seq=seq + 1, start_hash=digest, anchor=_anchor(entries))


def test_verify_altered_details_is_reported_as_altered() -> None:
    entries = _entries(5)
    record, prev, digest = entries[2]
    entries[2] = (dataclasses.replace(record, details={"kind": "piv", "n": 3}), prev, digest)
    assert (_broken(entries).seq, _broken(entries).reason) == (3, Breakage.ALTERED)


def test_verify_altered_hash_is_reported_as_altered() -> None:
    entries = _entries(5)
    record, prev, _ = entries[4]
    entries[4] = (record, prev, "f" * 64)
    error = _broken(entries)
    assert (error.seq, error.reason) == (5, Breakage.ALTERED)


def test_verify_altered_prev_hash_is_reported_as_altered() -> None:
    entries = _entries(5)
    record, _, digest = entries[1]
    entries[1] = (record, "1" * 64, digest)
    assert _broken(entries).reason is Breakage.ALTERED


def test_verify_replaced_record_with_fresh_hash_is_reported_at_that_record() -> None:
    entries = _entries(5)
    _, prev, _ = entries[2]
    forged = _record(3, kind="piv")
    entries[2] = (forged, prev, record_hash(prev, forged))
    error = _broken(entries)
    assert (error.seq, error.reason) == (3, Breakage.ALTERED)


def test_verify_removed_entry_is_reported_with_the_missing_seq() -> None:
    entries = _entries(5)
    del entries[2]
    error = _broken(entries)
    assert (error.seq, error.reason) == (3, Breakage.REMOVED)


def test_verify_removed_first_entry_is_reported_as_removed() -> None:
    error = _broken(_entries(3)[1:])
    assert (error.seq, error.reason) == (1, Breakage.REMOVED)


def test_verify_reordered_entries_are_reported_as_reordered() -> None:
    entries = _entries(5)
    entries[1], entries[3] = entries[3], entries[1]
    error = _broken(entries)
    assert (error.seq, error.reason) == (4, Breakage.REORDERED)


def test_verify_adjacent_swap_is_reported_as_reordered() -> None:
    entries = _entries(3)
    entries[0], entries[1] = entries[1], entries[0]
    assert _broken(entries).reason is Breakage.REORDERED


def test_verify_duplicated_entry_is_reported_as_duplicated() -> None:
    entries = _entries(4)
    entries.insert(2, entries[1])
    error = _broken(entries)
    assert (error.seq, error.reason) == (2, Breakage.DUPLICATED)


def test_verify_truncation_is_only_caught_with_an_anchor() -> None:
    entries = _entries(5)
    anchor = _anchor(entries)
    verify(entries[:3])  # an unkeyed chain cannot know it lost its end
    error = _broken(entries[:3], anchor=anchor)
    assert (error.seq, error.reason) == (4, Breakage.REMOVED)


def test_verify_rewritten_end_is_caught_by_the_anchor() -> None:
    entries = _entries(5)
    anchor = _anchor(entries)
    _, prev, _ = entries[4]
    forged = _record(5, kind="piv")
    entries[4] = (forged, prev, record_hash(prev, forged))
    verify(entries)
    error = _broken(entries, anchor=anchor)
    assert (error.seq, error.reason) == (5, Breakage.ALTERED)


def test_verify_wrong_start_hash_is_altered() -> None:
    assert _broken(_entries(3), start_hash="ab" * 32).reason is Breakage.ALTERED


def test_verify_anchor_before_the_entries_is_a_caller_error() -> None:
    entries = _entries(3, first_seq=10)
    with pytest.raises(ValueError, match="anchor"):
        verify(entries, start_seq=10, anchor=(2, "0" * 64))


# --- any single modification of a valid chain is detected -------------------------------------

MODIFICATIONS = (
    "alter_field",
    "alter_field_rehash",
    "alter_prev",
    "alter_hash",
    "remove",
    "swap",
    "duplicate",
    "insert_forged",
)


def _modify(entries: list[Entry], how: str, i: int, j: int) -> list[Entry]:
    modified = list(entries)
    record, prev, digest = modified[i]
    if how in {"alter_field", "alter_field_rehash"}:
        changed = {
            0: dataclasses.replace(record, event=record.event + "!"),
            1: dataclasses.replace(record, actor=record.actor + "!"),
            2: dataclasses.replace(record, subject=record.subject + "!"),
            3: dataclasses.replace(record, at="2030-01-01T00:00:00+00:00"),
            4: dataclasses.replace(record, details={**record.details, "extra": True}),
            5: dataclasses.replace(record, seq=record.seq + 100),
        }[j % 6]
        new_hash = record_hash(prev, changed) if how == "alter_field_rehash" else digest
        modified[i] = (changed, prev, new_hash)
    elif how == "alter_prev":
        modified[i] = (record, "e" * 64 if prev != "e" * 64 else "d" * 64, digest)
    elif how == "alter_hash":
        modified[i] = (record, prev, "e" * 64 if digest != "e" * 64 else "d" * 64)
    elif how == "remove":
        del modified[i]
    elif how == "swap":
        j = j % len(modified)
        if j == i:
            j = (i + 1) % len(modified)
        modified[i], modified[j] = modified[j], modified[i]
    elif how == "duplicate":
        modified.insert(j % (len(modified) + 1), modified[i])
    else:
        # A forged record with a fresh hash chained onto entry i, before the entries after it.
        # (Chained onto the last entry it is an append, which an append-only log accepts.)
        i = min(i, len(modified) - 2)
        record, _, digest = modified[i]
        forged = _record(record.seq + 1, forged=True)
        modified.insert(i + 1, (forged, digest, record_hash(digest, forged)))
    return modified


@given(
    count=st.integers(2, 8),
    how=st.sampled_from(MODIFICATIONS),
    i_seed=st.integers(0, 100),
    j=st.integers(0, 100),
)
def test_verify_detects_any_single_modification(count: int, how: str, i_seed: int, j: int) -> None:
    entries = _entries(count)
    anchor = _anchor(entries)
    modified = _modify(entries, how, i_seed % count, j)
    assert modified != entries
    with pytest.raises(AuditChainBroken):
        verify(modified, anchor=anchor)


@given(
    st.dictionaries(st.sampled_from(["kind", "channel", "serial", "n"]), st.integers() | st.text())
)
def test_verify_accepts_any_valid_chain(details: dict[str, JsonValue]) -> None:
    records = [dataclasses.replace(_record(seq), details=details) for seq in (1, 2, 3)]
    linked = chain(records)
    prevs = [GENESIS] + [digest for _, digest in linked[:-1]]
    entries = [(r, p, h) for (r, h), p in zip(linked, prevs, strict=True)]
    verify(entries, anchor=_anchor(entries))


# --- details -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {"pin": "1234"},
        {"PIN": "1234"},
        {"new_pin": "1234"},
        {"newPin": "1234"},
        {"pins": ["1234"]},
        {"puk": "12345678"},
        {"password": "x"},
        {"Password": "x"},
        {"old_password": "x"},
        {"passwd": "x"},
        {"passphrase": "x"},
        {"secret": "x"},
        {"client_secret": "x"},
        {"code": "123456"},
        {"otp_code": "123456"},
        {"codes": ["123456"]},
        {"passcode": "x"},
        {"otp": "cccc"},
        {"seed": "x"},
        {"totpSeed": "x"},
        {"key": "x"},
        {"aes_key": "x"},
        {"apikey": "x"},
        {"keys": ["x"]},
        {"device": {"pin": "1234"}},
        {"attempts": [{"code": "123456"}]},
    ],
)
def test_validate_details_refuses_secret_looking_keys(details: dict[str, object]) -> None:
    with pytest.raises(AuditDetailsRefused) as caught:
        validate_details(details)
    for value in ("1234", "123456", "12345678", "cccc"):
        assert value not in str(caught.value)


def test_validate_details_names_the_nested_key() -> None:
    with pytest.raises(AuditDetailsRefused) as caught:
        validate_details({"device": {"user_pin": "1234"}})
    assert caught.value.key == "device.user_pin"


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"kind": "fido2", "channel": "self_service", "attempts": 3, "blocked": False},
        {"serial": "12345678", "sw": "6983", "kid": "abc", "country": "DK"},
        {"pinned": True, "keyboard_layout": "da", "retries_left": 2, "reason": None},
        {"nested": {"list": [1, "two", None, {"three": 3}]}},
    ],
)
def test_validate_details_accepts_plain_json(details: dict[str, object]) -> None:
    validate_details(details)


@pytest.mark.parametrize(
    "details",
    [{"ratio": 0.5}, {"nan": float("nan")}, {"raw": b"\x00"}, {"when": object()}, {"t": (1, 2)}],
)
def test_validate_details_refuses_values_that_are_not_plain_json(
    details: dict[str, object],
) -> None:
    with pytest.raises(AuditDetailsRefused):
        validate_details(details)


def test_record_refuses_secret_details() -> None:
    with pytest.raises(AuditDetailsRefused):
        _record(1, pin="1234")


def test_record_copies_details() -> None:
    details: dict[str, JsonValue] = {"kind": "fido2"}
    record = AuditRecord(1, "2025-01-01T00:00:00+00:00", "e", "a", "s", details)
    before = record.canonical()
    details["kind"] = "piv"
    assert record.canonical() == before


@pytest.mark.parametrize(
    ("seq", "at"),
    [(-1, "2025-01-01T00:00:00+00:00"), (1, "2025-01-01T00:00:00"), (1, "yesterday")],
)
def test_record_refuses_bad_seq_or_time(seq: int, at: str) -> None:
    with pytest.raises(ValueError, match=r"seq|at"):
        AuditRecord(seq, at, "e", "a", "s")
