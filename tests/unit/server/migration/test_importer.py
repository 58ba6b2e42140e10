"""The legacy importer on SQLite and PostgreSQL: both formats, bad rows with their line
numbers, idempotent re-runs, changed rows, resuming where a stopped run committed last."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, update

from server.services.errors import InvalidPersonNumber, SecretUnreadable
from server.services.migration.formats import bitmap_from_positions, hash_legacy_password
from server.services.migration.generator import iter_lines
from server.services.migration.import_rows import (
    CSV_COLUMNS,
    RowRejected,
    parse_csv_line,
    parse_json_line,
)
from server.services.migration.importer import (
    ImportFailed,
    ImportProgress,
    ImportSummary,
    LegacyImporter,
)
from server.services.person_number import PersonNumber
from server.services.secretbox import SecretBox
from server.storage.engine import create_engine_for, migrate
from server.storage.migration_tables import (
    ImportReject,
    ImportRun,
    ImportStatus,
    KeyCardStatus,
    LegacyCodeToken,
    LegacyKeyCard,
    LegacyUser,
    LegacyUserStatus,
)

BOX = SecretBox([bytes(range(32))])
SECRET = "5a" * 32
SEED = "c3" * 20


class Stop(Exception):
    """Stands in for a crash right after a batch was committed."""


def legacy_content_digest(engine: Engine, box: SecretBox = BOX) -> str:
    """SHA-256 over everything imported (secrets opened, since sealing is randomised), ordered
    by key; timestamps left out. Equal digests: equal imports, whatever the database."""
    digest = hashlib.sha256()
    with engine.connect() as connection:
        for user in connection.execute(select(LegacyUser).order_by(LegacyUser.user_id)):
            digest.update(
                repr(
                    (
                        user.user_id,
                        user.person_number,
                        user.name,
                        user.birth_year,
                        user.bank,
                        user.password_hash,
                        str(user.status),
                        user.failures,
                        user.row_digest,
                        user.version,
                    )
                ).encode()
            )
        for card in connection.execute(select(LegacyKeyCard).order_by(LegacyKeyCard.serial)):
            secret = box.open(card.sealed_secret, context=f"legacy-card:{card.serial}")
            digest.update(
                repr(
                    (
                        card.serial,
                        card.user_id,
                        secret.hex(),
                        bytes(card.used).hex(),
                        card.remaining,
                        str(card.status),
                        card.version,
                    )
                ).encode()
            )
        for token in connection.execute(select(LegacyCodeToken).order_by(LegacyCodeToken.serial)):
            seed = box.open(token.sealed_secret, context=f"legacy-token:{token.serial}")
            digest.update(
                repr(
                    (
                        token.serial,
                        token.user_id,
                        seed.hex(),
                        token.algorithm,
                        token.digits,
                        token.counter,
                        token.failures,
                        token.version,
                    )
                ).encode()
            )
    return digest.hexdigest()


def row(user_id: str = "u1", person_number: str = "010180-1234", **changes: Any) -> dict[str, Any]:
    """One valid row of the export as JSON data."""
    data: dict[str, Any] = {
        "user_id": user_id,
        "person_number": person_number,
        "name": "Anne Sørensen",
        "bank": "Nordea",
        "password_hash": hash_legacy_password("pw", iterations=1, salt=b"salt" * 4),
        "key_card": {"serial": f"KC-{user_id}", "secret": SECRET, "used": [0, 5, 147]},
        "code_token": None,
    }
    data.update(changes)
    return data


def line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode() + b"\n"


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def population(path: Path, count: int, *, fmt: str = "jsonl", **options: Any) -> Path:
    return write(path, *iter_lines(count, fmt=fmt, seed=21, **options))


def run_of(engine: Engine, run_id: object) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(ImportRun).where(ImportRun.id == run_id)).one()


def rejects_of(engine: Engine, summary: ImportSummary) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        return [
            (r.line_number, r.reason)
            for r in connection.execute(
                select(ImportReject)
                .where(ImportReject.run_id == summary.run_id)
                .order_by(ImportReject.line_number)
            )
        ]


@pytest.fixture
def importer(engine: Engine) -> LegacyImporter:
    return LegacyImporter(engine, BOX, batch_size=50)


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[Engine]:
    """A second, SQLite database for clean imports to compare with."""
    engine = create_engine_for(f"sqlite+pysqlite:///{tmp_path / 'reference.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_json_lines_import_into_the_legacy_tables(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    token = {"serial": "TK-1", "seed": SEED, "algorithm": "hotp", "digits": 8}
    source = write(
        tmp_path / "export.jsonl",
        line(row("u1", code_token=token)),
        line(
            row(
                "u2",
                "020290-4321",
                bank=None,
                key_card={"serial": "KC-2", "secret": SECRET, "used": list(range(148))},
            )
        ),
    )
    summary = importer.run(source)
    assert (summary.lines, summary.inserted, summary.rejected) == (2, 2, 0)
    assert (summary.run_imported, summary.first_line, summary.resumed) == (2, 1, False)
    with engine.connect() as connection:
        users = {u.user_id: u for u in connection.execute(select(LegacyUser))}
        cards = {c.serial: c for c in connection.execute(select(LegacyKeyCard))}
        tokens = list(connection.execute(select(LegacyCodeToken)))
    first = users["u1"]
    assert (first.person_number, first.name, first.birth_year, first.bank) == (
        "010180-1234",
        "Anne Sørensen",
        1980,
        "Nordea",
    )
    assert first.status == LegacyUserStatus.ACTIVE
    assert first.password_hash == row()["password_hash"]  # stored as it is, cost included
    assert users["u2"].bank is None
    card = cards["KC-u1"]
    assert BOX.open(card.sealed_secret, context="legacy-card:KC-u1") == bytes.fromhex(SECRET)
    with pytest.raises(SecretUnreadable):
        BOX.open(card.sealed_secret, context="legacy-card:KC-2")
    assert bytes(card.used) == bitmap_from_positions([0, 5, 147])
    assert (card.remaining, card.status) == (145, KeyCardStatus.ACTIVE)
    assert (cards["KC-2"].remaining, cards["KC-2"].status) == (0, KeyCardStatus.EXHAUSTED)
    assert len(tokens) == 1
    assert (tokens[0].user_id, tokens[0].algorithm, tokens[0].digits) == ("u1", "hotp", 8)
    assert BOX.open(tokens[0].sealed_secret, context="legacy-token:TK-1") == bytes.fromhex(SEED)
    run = run_of(engine, summary.run_id)
    assert run.status == ImportStatus.COMPLETED
    assert (run.byte_offset, run.line_number) == (source.stat().st_size, 2)


def test_csv_reads_as_the_same_rows_as_json_lines(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    first = importer.run(population(tmp_path / "people.jsonl", 240))
    before = legacy_content_digest(engine)
    again = importer.run(population(tmp_path / "people.csv", 240, fmt="csv"))
    assert (first.inserted, again.inserted, again.unchanged) == (240, 0, 240)
    assert again.format == "csv"
    assert legacy_content_digest(engine) == before


def test_csv_columns_may_come_in_any_order_and_a_wrong_header_stops_the_import(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    columns = list(reversed(CSV_COLUMNS))
    values = dict.fromkeys(CSV_COLUMNS, "")
    values.update(
        user_id="u1",
        person_number="010180-1234",
        name="Bo Holm",
        password_hash=row()["password_hash"],
        card_serial="KC1",
        card_secret=SECRET,
        card_used="3 4",
    )
    text = ",".join(columns) + "\r\n" + ",".join(values[c] for c in columns) + "\r\n"
    summary = importer.run(write(tmp_path / "reversed.csv", b"\xef\xbb\xbf" + text.encode()))
    assert (summary.inserted, summary.rejected) == (1, 0)
    with pytest.raises(ImportFailed, match="missing bank, card_secret"):
        importer.run(write(tmp_path / "short.csv", b"user_id,name\n"))


def test_bad_rows_are_rejected_with_their_line_numbers_and_the_rest_imported(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    importer.run(write(tmp_path / "earlier.jsonl", line(row("u0", "050505-5555"))))
    source = write(
        tmp_path / "export.jsonl",
        line(row("u1")),
        line(row("u2", "310280-1234")),  # 31 February
        line(row("u3", "010180-1234")),  # the person number of line 1
        line(row("u4", "040404-4444", password_hash="md5$abc")),  # noqa: S106
        line(row("u5", "050505-1111", key_card={"serial": "KC5", "secret": SECRET[:-2]})),
        b"\n",
        b'{"user_id": "u7", "name": "Bj\xf8rn"}\n',
        line(row("u8", "050505-5555")),  # the person number of u0, imported before
        line(row("u9", "090909-9999", extra=1)),
        line(
            row("u10", "101010-1010", code_token={"serial": "T", "seed": SEED, "algorithm": "sha1"})
        ),
        line(row("u11", "111111-1111", key_card=None)),
        b"[1, 2]\n",
        line(row("u13", "131013-1313")),
    )
    summary = importer.run(source)
    assert (summary.lines, summary.inserted, summary.rejected) == (13, 2, 11)
    rejects = rejects_of(engine, summary)
    assert rejects == [
        (2, "person_number: the day of the person number does not exist in that month"),
        (3, "person_number: already imported for another user id"),
        (4, "password_hash: expected pbkdf2_sha256$iterations$salt$hash"),
        (5, "key_card.secret: expected 32 bytes in hex"),
        (6, "empty line"),
        (7, "not UTF-8 (byte 30)"),
        (8, "person_number: already imported for another user id"),
        (9, "row: unknown field 'extra'"),
        (10, "code_token.algorithm: expected totp or hotp"),
        (11, "key_card: a user needs a key card or a code token"),
        (12, "row: expected an object"),
    ]
    assert summary.first_rejects == rejects[:10]
    assert run_of(engine, summary.run_id).rows_rejected == 11
    with engine.connect() as connection:
        imported = set(connection.scalars(select(LegacyUser.user_id)))
    assert imported == {"u0", "u1", "u13"}
    for _, reason in rejects:  # what is wrong, never the value
        assert SECRET[:16] not in reason
        assert "1234" not in reason
        assert "c2FsdH" not in reason  # the salt


def test_csv_lines_with_the_wrong_shape_are_rejected(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    lines = list(iter_lines(3, fmt="csv", seed=5))
    good = lines[1].rstrip(b"\n")
    source = write(
        tmp_path / "export.csv",
        lines[0],
        good.rsplit(b",", 1)[0] + b"\n",  # a column short
        good + b",extra\n",
        b'"unbalanced,quote\n',
        good.replace(b"KC", b"K\x00C", 1) + b"\n",
        lines[2],
        lines[3].replace(b"\n", b"\r\n"),
    )
    summary = importer.run(source)
    assert rejects_of(engine, summary) == [
        (2, "expected 12 columns, found 11"),
        (3, "expected 12 columns, found 13"),
        (4, "not a CSV line (unbalanced quotes?)"),
        (5, "key_card.serial: expected 1-32 letters, digits or - (ASCII)"),
    ]
    assert summary.inserted == 2
    assert (summary.lines, run_of(engine, summary.run_id).line_number) == (6, 7)


def test_an_overlong_line_is_rejected_and_the_next_line_read(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    long_line = line(row("u1", name="A" * 100_000))
    summary = importer.run(write(tmp_path / "long.jsonl", long_line, line(row("u2"))))
    assert rejects_of(engine, summary) == [(1, "line longer than 64 KiB")]
    assert summary.inserted == 1


def test_a_repeat_inside_one_batch_is_judged_like_a_repeat_across_batches(
    engine: Engine, tmp_path: Path
) -> None:
    lines = [
        line(row("u1")),
        line(row("u1")),  # the same row again: unchanged
        line(row("u2", "020202-2222", key_card={"serial": "KC-u1", "secret": SECRET})),
        line(row("u1", name="Anne Holm")),  # the same user changed: the later row wins
    ]
    results = []
    for batch_size in (1, 1000):
        importer = LegacyImporter(engine, BOX, batch_size=batch_size)
        summary = importer.run(write(tmp_path / f"repeats-{batch_size}.jsonl", *lines))
        results.append(
            (summary.inserted, summary.updated, summary.unchanged, rejects_of(engine, summary))
        )
        with engine.begin() as connection:
            connection.execute(delete(LegacyKeyCard))
            connection.execute(delete(LegacyUser))
    assert (
        results[0]
        == results[1]
        == (
            1,
            1,
            1,
            [(3, "key_card.serial: already belongs to another user")],
        )
    )


def test_importing_again_changes_nothing(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    source = population(tmp_path / "people.jsonl", 150, bad_every=10)
    first = importer.run(source)
    before = legacy_content_digest(engine)
    again = importer.run(source)
    assert (first.inserted, first.rejected) == (135, 15)
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 135, 15)
    assert again.run_id != first.run_id
    assert not again.resumed
    assert legacy_content_digest(engine) == before  # versions included: nothing was rewritten
    assert run_of(engine, first.run_id).status == ImportStatus.COMPLETED


def test_a_changed_row_updates_a_user_who_has_not_migrated(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    token = {"serial": "TK-1", "seed": SEED}
    importer.run(
        write(
            tmp_path / "v1.jsonl", line(row("u1", code_token=token)), line(row("u2", "020202-2222"))
        )
    )
    with engine.begin() as connection:  # a legacy login since the export used position 9
        connection.execute(
            update(LegacyKeyCard)
            .where(LegacyKeyCard.serial == "KC-u1")
            .values(used=bitmap_from_positions([0, 5, 9, 147]), remaining=144)
        )
        connection.execute(
            update(LegacyCodeToken).where(LegacyCodeToken.serial == "TK-1").values(counter=7)
        )
    changed = row(
        "u1",
        name="Anne Holm",
        key_card={"serial": "KC-u1", "secret": SECRET, "used": [0, 5, 6, 147]},
        code_token={"serial": "TK-1", "seed": "d4" * 20},
    )
    summary = importer.run(
        write(tmp_path / "v2.jsonl", line(changed), line(row("u2", "020202-2222")))
    )
    assert (summary.updated, summary.unchanged, summary.inserted) == (1, 1, 0)
    with engine.connect() as connection:
        user = connection.execute(select(LegacyUser).where(LegacyUser.user_id == "u1")).one()
        card = connection.execute(select(LegacyKeyCard).where(LegacyKeyCard.user_id == "u1")).one()
        stored_token = connection.execute(select(LegacyCodeToken)).one()
    assert (user.name, user.version) == ("Anne Holm", 2)
    assert bytes(card.used) == bitmap_from_positions([0, 5, 6, 9, 147])  # none made unused
    assert (card.remaining, card.version) == (143, 2)
    assert stored_token.counter == 7  # replay protection kept
    assert BOX.open(stored_token.sealed_secret, context="legacy-token:TK-1") == b"\xd4" * 20
    # A new card in the export replaces the old one; a token it no longer lists is gone.
    new_card = row("u1", name="Anne Holm", key_card={"serial": "KC-new", "secret": SECRET})
    summary = importer.run(write(tmp_path / "v3.jsonl", line(new_card)))
    assert summary.updated == 1
    with engine.connect() as connection:
        statuses = {
            serial: status
            for serial, status in connection.execute(
                select(LegacyKeyCard.serial, LegacyKeyCard.status).where(
                    LegacyKeyCard.user_id == "u1"
                )
            )
        }
        assert connection.execute(select(LegacyCodeToken)).first() is None
    assert statuses == {"KC-u1": KeyCardStatus.REPLACED, "KC-new": KeyCardStatus.ACTIVE}


def test_a_changed_row_of_a_migrated_user_is_refused(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    importer.run(write(tmp_path / "v1.jsonl", line(row("u1"))))
    with engine.begin() as connection:
        connection.execute(
            update(LegacyUser)
            .where(LegacyUser.user_id == "u1")
            .values(status=LegacyUserStatus.MIGRATED)
        )
    before = legacy_content_digest(engine)
    summary = importer.run(write(tmp_path / "v2.jsonl", line(row("u1", name="Anne Holm"))))
    assert rejects_of(engine, summary) == [
        (1, "changed, but the user is migrated: the stored row is kept")
    ]
    assert legacy_content_digest(engine) == before
    assert importer.run(tmp_path / "v1.jsonl").unchanged == 1  # unchanged is no refusal


def _stop_after(batches: int, seen: list[ImportProgress] | None = None) -> Any:
    """A progress callback that stops the import after ``batches`` commits, noting each."""
    noted = seen if seen is not None else []

    def progress(done: ImportProgress) -> None:
        noted.append(done)
        if len(noted) == batches:
            raise Stop

    return progress


def test_a_stopped_run_resumes_after_its_last_committed_batch(
    engine: Engine, importer: LegacyImporter, reference: Engine, tmp_path: Path
) -> None:
    source = population(tmp_path / "people.csv", 230, fmt="csv", bad_every=7)
    seen: list[ImportProgress] = []
    with pytest.raises(Stop):
        importer.run(source, on_progress=_stop_after(2, seen))
    with engine.connect() as connection:
        stopped = connection.execute(select(ImportRun)).one()
    assert stopped.status == ImportStatus.FAILED
    # The duplicate person number on line 15 ends the first batch early (lines 2-14).
    assert [done.line_number for done in seen] == [14, 64] == [14, stopped.line_number]
    lines = source.read_bytes().split(b"\n")
    assert stopped.byte_offset == sum(len(text) + 1 for text in lines[:64])
    resumed = importer.run(source)
    assert resumed.run_id == stopped.id
    assert (resumed.resumed, resumed.first_line, resumed.lines) == (True, 65, 231 - 64)
    clean = LegacyImporter(reference, BOX).run(source)
    assert legacy_content_digest(engine) == legacy_content_digest(reference)
    assert (resumed.run_imported, resumed.run_rejected) == (clean.inserted, clean.rejected)
    assert rejects_of(engine, resumed) == rejects_of(reference, clean)
    assert run_of(engine, resumed.run_id).status == ImportStatus.COMPLETED


def test_a_different_file_under_the_same_name_is_not_resumed(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    source = population(tmp_path / "export.jsonl", 120)
    with pytest.raises(Stop):
        importer.run(source, on_progress=_stop_after(1))
    write(source, line(row("u1")), line(row("u2", "020202-2222")))
    summary = importer.run(source)
    assert (summary.resumed, summary.first_line, summary.inserted) == (False, 1, 2)
    with engine.connect() as connection:
        statuses = sorted(str(s) for s in connection.scalars(select(ImportRun.status)))
    assert statuses == ["completed", "failed"]


def test_an_unfinished_run_is_not_resumed_in_another_format(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    source = population(tmp_path / "export.jsonl", 120)
    with pytest.raises(Stop):
        importer.run(source, on_progress=_stop_after(1))
    with pytest.raises(ImportFailed, match="reads it as jsonl"):
        importer.run(source, "csv")


def test_a_run_moved_on_by_another_importer_stops_this_one(
    engine: Engine, importer: LegacyImporter, tmp_path: Path
) -> None:
    source = population(tmp_path / "export.jsonl", 160)

    def other_importer(done: ImportProgress) -> None:
        with engine.begin() as connection:
            connection.execute(
                update(ImportRun)
                .where(ImportRun.id == done.run_id)
                .values(byte_offset=done.byte_offset + 1)
            )

    with pytest.raises(ImportFailed, match="another importer"):
        importer.run(source, on_progress=other_importer)
    with engine.connect() as connection:
        assert len(list(connection.scalars(select(LegacyUser.user_id)))) == 50


@pytest.mark.parametrize(
    "name",
    ["Anne \\N Sørensen", "C:\\Users\\anne", "Ib \\", "Åse \\\\ Ø", "Bo \\x41 'Ib' \"Ea\""],
)
def test_odd_characters_come_back_as_written(
    engine: Engine, reference: Engine, tmp_path: Path, name: str
) -> None:
    """A name with backslashes, or one that reads like COPY's NULL (``\\N``) or a bytea escape,
    is stored as the export wrote it: on PostgreSQL the rows go in as COPY text, whose escaping
    must round-trip (identifiers and serials are ASCII letters and digits: the import refuses
    others). The same file imported the plain way (SQLite) is the reference."""
    source = write(
        tmp_path / "export.jsonl",
        line(row("u1", name=name, bank="\\N")),
        line(row("u2", "020290-4321", name=name, bank=None)),
    )
    summary = LegacyImporter(engine, BOX, batch_size=50).run(source)
    LegacyImporter(reference, BOX, batch_size=50).run(source)
    assert (summary.inserted, summary.rejected) == (2, 0)
    with engine.connect() as connection:
        stored = {u.user_id: (u.name, u.bank) for u in connection.execute(select(LegacyUser))}
    assert stored == {"u1": (name, "\\N"), "u2": (name, None)}
    assert legacy_content_digest(engine) == legacy_content_digest(reference)


def test_parsing_processes_import_what_one_process_imports(
    engine: Engine, reference: Engine, tmp_path: Path
) -> None:
    source = population(tmp_path / "people.jsonl", 900, bad_every=11)
    pooled = LegacyImporter(engine, BOX, batch_size=70, workers=2, pool_min_bytes=0)
    alone = LegacyImporter(reference, BOX, batch_size=70)
    seen: list[ImportProgress] = []
    with pytest.raises(Stop):  # stopped and resumed with the pool, too
        pooled.run(source, on_progress=_stop_after(3, seen))
    summary = pooled.run(source)
    clean = alone.run(source)
    assert summary.resumed
    assert summary.first_line == seen[-1].line_number + 1
    assert (summary.run_imported, summary.run_rejected) == (clean.inserted, clean.rejected)
    assert rejects_of(engine, summary) == rejects_of(reference, clean)
    assert legacy_content_digest(engine) == legacy_content_digest(reference)


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite+pysqlite:///{tmp_path / 'memory.db'}")
    migrate(engine)
    importer = LegacyImporter(engine, BOX, batch_size=200)
    importer.run(population(tmp_path / "warm.jsonl", 200))  # first-use caches are not growth
    peaks = []
    for count in (2000, 6000):  # both over two parsing chunks (PARSE_CHUNK)
        source = write(tmp_path / f"{count}.jsonl", *iter_lines(count, seed=count))
        tracemalloc.start()
        try:
            importer.run(source)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    engine.dispose()
    assert peaks[1] < 1.1 * peaks[0], peaks


# Text a file can hold: any character but line ends and lone surrogates (UTF-8 has no bytes
# for them; raw bytes, the strategy beside it, cover what is not UTF-8).
_LINE_TEXT = st.text(
    st.characters(exclude_characters="\n\r", exclude_categories=("Cs",)), max_size=300
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([*row(), "serial", "secret", "used", "seed"]), children, max_size=6
        )
    ),
    max_leaves=20,
)


@given(digits=st.from_regex(r"(0[0-9]|[12][0-9]|3[0-3])(0[0-9]|1[0-4])[0-9]{6}", fullmatch=True))
def test_person_numbers_are_judged_as_person_number_judges_them(digits: str) -> None:
    text = f"{digits[:6]}-{digits[6:]}"
    try:
        expected: object = PersonNumber.parse(text).birth_date.year
    except InvalidPersonNumber as exc:
        expected = f"person_number: {exc.detail}"
    line_text = json.dumps(row(person_number=text))
    assert _outcome(line_text, parse_json_line) in (expected, "parsed")
    if isinstance(expected, int):
        assert parse_json_line(line_text).birth_year == expected


@given(positions=st.lists(st.integers(-3, 150), max_size=160))
def test_used_positions_are_judged_one_by_one(positions: list[int]) -> None:
    used = row(key_card={"serial": "KC1", "secret": SECRET, "used": positions})
    outcome = _outcome(json.dumps(used), parse_json_line)
    if len(set(positions)) != len(positions):
        assert outcome == "key_card.used: a position given twice"
    elif any(not 0 <= p < 148 for p in positions):
        assert outcome == "key_card.used: a position outside 0-147"
    else:
        card = parse_json_line(json.dumps(used)).key_card
        assert card is not None
        assert (card.used, card.remaining) == (
            bitmap_from_positions(positions),
            148 - len(positions),
        )


def _outcome(text: str, parse: Any) -> str:
    try:
        parse(text)
    except RowRejected as exc:
        return exc.reason
    return "parsed"


@given(text=_LINE_TEXT)
def test_any_text_parses_or_is_rejected(text: str) -> None:
    for parse in (parse_json_line, parse_csv_line):
        assert _outcome(text, parse)


@given(value=_JSON_VALUES)
def test_any_json_value_parses_or_is_rejected(value: object) -> None:
    assert _outcome(json.dumps(value), parse_json_line)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))
        | _LINE_TEXT.map(str.encode)
        | _JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        max_size=8,
    ),
    fmt=st.sampled_from(["jsonl", "csv"]),
)
def test_arbitrary_lines_never_crash_the_importer(
    lines: list[bytes], fmt: str, tmp_path: Path
) -> None:
    engine = create_engine_for(f"sqlite+pysqlite:///{tmp_path / 'fuzz.db'}")
    try:
        migrate(engine)
        header = (",".join(CSV_COLUMNS) + "\n").encode() if fmt == "csv" else b""
        body = b"".join(text + b"\n" for text in lines)
        source = write(tmp_path / f"fuzz.{fmt}", header + body)
        summary = LegacyImporter(engine, BOX, batch_size=3).run(source, fmt)
        assert summary.lines == len(lines)
        assert summary.inserted + summary.unchanged + summary.rejected == len(lines)
        assert run_of(engine, summary.run_id).status == ImportStatus.COMPLETED
    finally:
        engine.dispose()


def test_the_commands_generate_import_and_summarise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from akkreditiv.cli import app

    monkeypatch.setenv("AKKREDITIV_KEK_FILE", str(tmp_path / "kek.bin"))
    url = f"sqlite+pysqlite:///{tmp_path / 'cli.db'}"
    export = tmp_path / "people.csv"
    runner = CliRunner()
    made = runner.invoke(
        app, ["legacy", "generate", "--count", "40", "--out", str(export), "--bad-every", "20"]
    )
    assert made.exit_code == 0, made.output
    assert "wrote 40 rows (2 bad)" in made.output
    assert export.read_bytes().startswith(b"user_id,")  # CSV, from the name
    first = runner.invoke(app, ["legacy", "import", str(export), "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "new 38, updated 0, unchanged 0, rejected 2" in first.output
    assert "line 21: person_number: the day of the person number does not exist" in first.output
    assert "line 41: person_number: already imported for another user id" in first.output
    again = runner.invoke(app, ["legacy", "import", str(export), "--database-url", url, "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert (summary["inserted"], summary["unchanged"], summary["rejected"]) == (0, 38, 2)
    missing = runner.invoke(app, ["legacy", "import", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 1
    assert "no file at" in missing.output
