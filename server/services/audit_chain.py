"""The hash chain of the append-only audit log: canonical records, their chained hashes, and a
verifier that tells altered, removed and reordered entries apart."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, TypeAlias

from server.domain.model import AUDIT_CHAINS
from server.services.errors import AuditChainBroken, AuditDetailsRefused, Breakage

GENESIS = "00" * 32

JsonValue: TypeAlias = "bool | int | str | list[JsonValue] | dict[str, JsonValue] | None"

# Keys whose values are, or may be, secrets. Matched as words of the key ("user_pin",
# "otpSeed", "codes"), so "country" or "pinned" pass but "puk_code" does not; a few compounds
# that hide the word ("passcode", "apikey") are matched anywhere in the key.
SECRET_WORDS = frozenset({"pin", "puk", "password", "secret", "code", "otp", "seed", "key"})
SECRET_FRAGMENTS = ("password", "passwd", "passphrase", "secret", "passcode", "pincode", "apikey")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_HASH = re.compile(r"[0-9a-f]{64}")


class Anchor(NamedTuple):
    """A checkpoint of one chain kept outside the database: its entry ``seq`` had ``hash``."""

    chain: int
    seq: int
    hash: str


def genesis(chain: int) -> str:
    """The hash chain ``chain``'s first entry follows: ``GENESIS`` for chain 0 (the one chain
    the log was before it was partitioned, so its hashes stand unchanged), a hash of the
    chain's number for the others. Every chain starts apart, so no two entries anywhere share
    a ``prev_hash``, and an entry moved to another chain breaks both."""
    if isinstance(chain, bool) or not isinstance(chain, int) or not 0 <= chain < AUDIT_CHAINS:
        raise ValueError(f"a chain is numbered 0 to {AUDIT_CHAINS - 1}")
    if chain == 0:
        return GENESIS
    return hashlib.sha256(f"akkreditiv audit chain {chain}".encode("ascii")).hexdigest()


def validate_details(details: Mapping[str, object], *, _path: str = "") -> None:
    """Raise ``AuditDetailsRefused`` unless ``details`` is plain JSON without secret-looking keys.

    Values may be None, bool, int, str, lists and objects with string keys. Floats are refused:
    their text form is not guaranteed to survive storage (JSONB), and the hash must.
    """
    for key, value in details.items():
        path = f"{_path}.{key}" if _path else str(key)
        if not isinstance(key, str):
            raise AuditDetailsRefused(path, "keys must be strings")
        if _looks_secret(key):
            raise AuditDetailsRefused(path, "the key names a secret; secrets are never logged")
        _validate_value(value, path)


def _validate_value(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _validate_value(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        validate_details(value, _path=path)
        return
    raise AuditDetailsRefused(path, f"{type(value).__name__} is not allowed in audit details")


def _looks_secret(key: str) -> bool:
    words = [word.lower() for word in _WORD.findall(key)]
    lowered = key.lower()
    return any(
        word in SECRET_WORDS or word.removesuffix("s") in SECRET_WORDS for word in words
    ) or any(fragment in lowered for fragment in SECRET_FRAGMENTS)


@dataclass(frozen=True)
class AuditRecord:
    """One event in the audit log. ``at`` is an ISO 8601 time with its UTC offset.

    ``details`` is checked by ``validate_details`` and copied, so changing the caller's dict
    afterwards does not change the record.
    """

    seq: int
    at: str
    event: str
    actor: str
    subject: str
    details: dict[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise ValueError("seq is a non-negative integer")
        try:
            moment = datetime.fromisoformat(self.at)
        except (TypeError, ValueError):
            raise ValueError("at must be an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise ValueError("at must carry its UTC offset")
        validate_details(self.details)
        object.__setattr__(self, "details", copy.deepcopy(self.details))

    def canonical(self) -> bytes:
        """The bytes the hash covers: JSON with sorted keys and no whitespace, in UTF-8.

        Not RFC 8785 (keys sort by code point, not UTF-16 unit), but stable, which is all a
        chain needs: the same function computes and verifies.
        """
        document = {
            "seq": self.seq,
            "at": self.at,
            "event": self.event,
            "actor": self.actor,
            "subject": self.subject,
            "details": self.details,
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")


def record_hash(prev_hash: str, record: AuditRecord) -> str:
    """``SHA-256(prev_hash || canonical(record))`` in lowercase hex; ``prev_hash`` as raw bytes."""
    if not _HASH.fullmatch(prev_hash):
        raise ValueError("prev_hash is 64 lowercase hex digits")
    return hashlib.sha256(bytes.fromhex(prev_hash) + record.canonical()).hexdigest()


def chain(
    records: Iterable[AuditRecord], *, prev_hash: str = GENESIS
) -> list[tuple[AuditRecord, str]]:
    """Each record with its hash, linked from ``prev_hash`` (the last hash already stored).

    Sequence numbers must follow each other, so the chain built is one ``verify`` accepts.
    """
    linked: list[tuple[AuditRecord, str]] = []
    previous: AuditRecord | None = None
    for record in records:
        if previous is not None and record.seq != previous.seq + 1:
            raise ValueError(f"seq {record.seq} does not follow {previous.seq}")
        prev_hash = record_hash(prev_hash, record)
        linked.append((record, prev_hash))
        previous = record
    return linked


def verify(
    entries: Sequence[tuple[AuditRecord, str, str]],
    *,
    start_seq: int = 1,
    start_hash: str = GENESIS,
    anchor: tuple[int, str] | None = None,
    anchors: Iterable[tuple[int, str]] = (),
    chain: int = 0,
) -> None:
    """Check stored ``(record, prev_hash, hash)`` entries of one chain (numbered ``chain`` in
    the errors raised); raise ``AuditChainBroken`` if broken.

    ``start_seq`` and ``start_hash`` are where the entries must begin (the whole chain by
    default, ``genesis(chain)`` for a chain other than 0; a trusted earlier entry to check only
    a tail). Each entry is checked in turn for:

    - ALTERED: its hash does not match its record and prev_hash, or its prev_hash does not
      match the entry before (reported at that entry before, which is the one that changed);
    - REMOVED: a sequence number is skipped (reported at the first missing one);
    - REORDERED: a sequence number comes before one that is still missing;
    - DUPLICATED: a sequence number comes a second time.

    An unkeyed chain cannot show that entries were cut off its end, or that everything after
    some point was rewritten with fresh hashes. ``anchor`` is a ``(seq, hash)`` checkpoint kept
    outside the database (signed, published), ``anchors`` more of them; with them those are
    caught as REMOVED or ALTERED (``AnchorMismatch``, at the earliest checkpoint that fails).
    """
    seen = {entry[0].seq for entry in entries}
    expected_seq = start_seq
    expected_prev = start_hash
    previous_seq = start_seq - 1
    done: set[int] = set()
    for record, prev_hash, stored_hash in entries:
        if not _HASH.fullmatch(prev_hash) or record_hash(prev_hash, record) != stored_hash:
            raise AuditChainBroken(record.seq, Breakage.ALTERED, chain=chain)
        if record.seq != expected_seq:
            if record.seq in done:
                raise AuditChainBroken(record.seq, Breakage.DUPLICATED, chain=chain)
            if record.seq < expected_seq or expected_seq in seen:
                raise AuditChainBroken(record.seq, Breakage.REORDERED, chain=chain)
            raise AuditChainBroken(expected_seq, Breakage.REMOVED, chain=chain)
        if prev_hash != expected_prev:
            raise AuditChainBroken(previous_seq, Breakage.ALTERED, chain=chain)
        done.add(record.seq)
        previous_seq = record.seq
        expected_seq = record.seq + 1
        expected_prev = stored_hash
    for checkpoint in sorted({*anchors, *([] if anchor is None else [anchor])}):
        _check_anchor(entries, checkpoint, start_seq=start_seq, next_seq=expected_seq, chain=chain)


def _check_anchor(
    entries: Sequence[tuple[AuditRecord, str, str]],
    anchor: tuple[int, str],
    *,
    start_seq: int,
    next_seq: int,
    chain: int,
) -> None:
    anchor_seq, anchor_hash = anchor
    if anchor_seq < start_seq:
        raise ValueError("the anchor lies before the entries checked")
    if anchor_seq >= next_seq:
        raise AnchorMismatch(next_seq, Breakage.REMOVED, anchor, chain=chain)
    _, _, stored_hash = entries[anchor_seq - start_seq]
    if stored_hash != anchor_hash:
        raise AnchorMismatch(anchor_seq, Breakage.ALTERED, anchor, chain=chain)


class AnchorMismatch(AuditChainBroken):
    """A chain intact in itself that a checkpoint kept outside the database contradicts: the
    history up to ``anchor`` (the chain's ``(seq, hash)``) was rewritten (ALTERED), or entries
    up to it are gone (REMOVED)."""

    def __init__(
        self, seq: int, reason: Breakage, anchor: tuple[int, str], *, chain: int = 0
    ) -> None:
        super().__init__(seq, reason, chain=chain)
        self.anchor = anchor
