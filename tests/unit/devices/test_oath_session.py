"""OathSession end to end against the simulated OATH card in process, and the YKOATH codecs;
codes are checked against the RFC 4226/6238 tables and a reference HOTP written here."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from devices.errors import FileNotFound, ProtocolError
from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu, ResponseApdu
from devices.protocol.ykoath import (
    Credential,
    CredentialFormatError,
    OathAlgorithm,
    OathType,
    PutRequest,
    SelectResponse,
    device_id,
    format_code,
    parse_calculate_all,
    parse_list,
    parse_put,
    put_data,
    split_card_name,
    time_challenge,
)
from devices.tokens.oath import (
    AccessCodeRejected,
    CredentialNotFound,
    CredentialStorageFull,
    OathLocked,
    OathSession,
)
from firmware_sim.attach.inprocess import InProcessConnection
from firmware_sim.tokens import piv
from firmware_sim.tokens.card import SimulatedCard
from firmware_sim.tokens.oath import MAX_CREDENTIALS, load_applet, make_card, new_oath_state

SEEDS = {
    OathAlgorithm.SHA1: b"12345678901234567890",
    OathAlgorithm.SHA256: b"12345678901234567890123456789012",
    OathAlgorithm.SHA512: b"1234567890" * 6 + b"1234",
}
# RFC 6238 appendix B: (time, algorithm, 8-digit TOTP with a 30 s step).
TOTP_RFC6238 = [
    (59, OathAlgorithm.SHA1, "94287082"),
    (59, OathAlgorithm.SHA256, "46119246"),
    (59, OathAlgorithm.SHA512, "90693936"),
    (1111111109, OathAlgorithm.SHA1, "07081804"),
    (1111111109, OathAlgorithm.SHA256, "68084774"),
    (1111111109, OathAlgorithm.SHA512, "25091201"),
    (1111111111, OathAlgorithm.SHA1, "14050471"),
    (1111111111, OathAlgorithm.SHA256, "67062674"),
    (1111111111, OathAlgorithm.SHA512, "99943326"),
    (1234567890, OathAlgorithm.SHA1, "89005924"),
    (1234567890, OathAlgorithm.SHA256, "91819424"),
    (1234567890, OathAlgorithm.SHA512, "93441116"),
    (2000000000, OathAlgorithm.SHA1, "69279037"),
    (2000000000, OathAlgorithm.SHA256, "90698825"),
    (2000000000, OathAlgorithm.SHA512, "38618901"),
    (20000000000, OathAlgorithm.SHA1, "65353130"),
    (20000000000, OathAlgorithm.SHA256, "77737706"),
    (20000000000, OathAlgorithm.SHA512, "47863826"),
]
# RFC 4226 appendix D: HOTP for counters 0..9 with the SHA-1 seed.
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


def reference_code(seed: bytes, counter: int, digits: int, hash_name: str = "sha1") -> str:
    digest = hmac.new(seed, counter.to_bytes(8, "big"), hash_name).digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


class CountingConnection(InProcessConnection):
    """The in-process connection, counting the commands sent (to check round trips)."""

    def __init__(self, card: SimulatedCard) -> None:
        super().__init__(card)
        self.instructions: list[int] = []

    def transmit(self, apdu: CommandApdu) -> ResponseApdu:
        self.instructions.append(apdu.ins)
        return super().transmit(apdu)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    new_oath_state(tmp_path / "oath.json", credentials=[])
    return tmp_path / "oath.json"


def open_session(state_path: Path, *, touch: bool = True, clock: float = 59.0) -> OathSession:
    applet = load_applet(state_path, touch=lambda: touch)
    session = OathSession(CountingConnection(make_card(applet, strict=True)), clock=lambda: clock)
    session.select()
    return session


@pytest.fixture
def session(state_path: Path) -> OathSession:
    return open_session(state_path)


def rfc_totp(algorithm: OathAlgorithm, name: str = "rfc", period: int = 30) -> Credential:
    return Credential(name, OathType.TOTP, algorithm, digits=8, period=period)


def rfc_hotp(name: str = "hotp", counter: int = 0) -> Credential:
    return Credential(name, OathType.HOTP, counter=counter)


# --- application -------------------------------------------------------------------------------


def test_select_reports_version_device_id_and_unlocked(
    session: OathSession, state_path: Path
) -> None:
    info = session.select()

    assert info.version == (5, 2, 0)
    assert info.device_id == device_id(load_applet(state_path).state.salt)
    assert len(info.device_id) == 22
    assert not info.locked


def test_select_on_a_card_without_oath_raises_file_not_found(tmp_path: Path) -> None:
    card = piv.make_card(piv.new_card_state(tmp_path / "piv.json"), strict=True)

    with pytest.raises(FileNotFound):
        OathSession(InProcessConnection(card)).select()


def test_reset_empties_the_card_and_changes_device_id(session: OathSession) -> None:
    session.put(rfc_hotp(), SEEDS[OathAlgorithm.SHA1])
    before = session.select().device_id

    session.reset()

    assert session.list() == []
    assert session.select().device_id != before


# --- credentials -------------------------------------------------------------------------------


def test_put_then_list_round_trips_name_type_algorithm_and_period(session: OathSession) -> None:
    session.put(Credential("issuer:alice", OathType.TOTP), b"secret")
    session.put(
        Credential("issuer:slow", OathType.TOTP, OathAlgorithm.SHA256, period=60), b"secret"
    )
    session.put(Credential("counter", OathType.HOTP, OathAlgorithm.SHA512, digits=8), b"secret")

    listed = session.list()

    assert [(c.name, c.oath_type, c.algorithm, c.period) for c in listed] == [
        ("issuer:alice", OathType.TOTP, OathAlgorithm.SHA1, 30),
        ("issuer:slow", OathType.TOTP, OathAlgorithm.SHA256, 60),
        ("counter", OathType.HOTP, OathAlgorithm.SHA512, 30),
    ]
    assert listed[1].card_name == "60/issuer:slow"
    assert {(c.digits, c.counter, c.touch) for c in listed} == {(None, None, None)}


def test_delete_removes_and_unknown_name_raises_credential_not_found(
    session: OathSession,
) -> None:
    session.put(rfc_hotp("a"), b"secret")
    session.put(rfc_totp(OathAlgorithm.SHA1, "b", period=15), b"secret")

    session.delete("a")
    session.delete(session.list()[0])

    assert session.list() == []
    with pytest.raises(CredentialNotFound) as caught:
        session.delete("a")
    assert caught.value.sw == 0x6984


def test_put_on_a_full_card_raises_storage_full(session: OathSession) -> None:
    for index in range(MAX_CREDENTIALS):
        session.put(rfc_hotp(f"c{index}"), b"secret")

    with pytest.raises(CredentialStorageFull) as caught:
        session.put(rfc_hotp("one-more"), b"secret")

    assert caught.value.sw == 0x6A84
    assert caught.value.hint


def test_thirty_long_names_list_through_chained_answers(session: OathSession) -> None:
    names = [f"issuer-{n:02d}:someone.with.a.long.address@example.org" for n in range(30)]
    for name in names:
        session.put(Credential(name, OathType.TOTP), b"secret")

    assert [c.name for c in session.list()] == names
    codes = session.calculate_all()
    assert list(codes) == names
    assert set(codes.values()) == {reference_code(b"secret".ljust(14, b"\0"), 1, 6)}


# --- codes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "algorithm", "expected"), TOTP_RFC6238)
def test_calculate_totp_matches_rfc6238(
    session: OathSession, at: int, algorithm: OathAlgorithm, expected: str
) -> None:
    session.put(rfc_totp(algorithm), SEEDS[algorithm])

    code = session.calculate("rfc", at)

    assert code == expected
    assert code == reference_code(SEEDS[algorithm], at // 30, 8, algorithm.name.lower())


def test_calculate_hotp_follows_rfc4226(session: OathSession) -> None:
    session.put(rfc_hotp(), SEEDS[OathAlgorithm.SHA1])

    codes = [session.calculate("hotp") for _ in range(10)]

    assert codes == HOTP_RFC4226
    assert codes == [reference_code(SEEDS[OathAlgorithm.SHA1], n, 6) for n in range(10)]


def test_hotp_counter_persists_across_reload(session: OathSession, state_path: Path) -> None:
    session.put(rfc_hotp(), SEEDS[OathAlgorithm.SHA1])
    assert [session.calculate("hotp") for _ in range(4)] == HOTP_RFC4226[:4]

    reopened = open_session(state_path)

    assert reopened.calculate("hotp") == HOTP_RFC4226[4]
    assert load_applet(state_path).state.credentials[b"hotp"].counter == 5


def test_hotp_initial_counter_is_sent_with_put(session: OathSession) -> None:
    session.put(rfc_hotp(counter=7), SEEDS[OathAlgorithm.SHA1])

    assert session.calculate("hotp") == HOTP_RFC4226[7]


def test_calculate_uses_the_clock_and_the_credential_period(state_path: Path) -> None:
    session = open_session(state_path, clock=1234567890.0)
    seed = SEEDS[OathAlgorithm.SHA1]
    session.put(rfc_totp(OathAlgorithm.SHA1, "slow", period=60), seed)

    code = session.calculate("60/slow")

    assert code == reference_code(seed, 1234567890 // 60, 8)
    assert code != reference_code(seed, 1234567890 // 30, 8)


def test_calculate_with_a_credential_skips_the_list(session: OathSession) -> None:
    session.put(rfc_hotp(), SEEDS[OathAlgorithm.SHA1])
    connection = session._transport
    assert isinstance(connection, CountingConnection)
    connection.instructions.clear()

    session.calculate(rfc_hotp())
    session.calculate("hotp")

    assert connection.instructions == [0xA2, 0xA1, 0xA2]


def test_calculate_unknown_name_raises_credential_not_found(session: OathSession) -> None:
    with pytest.raises(CredentialNotFound):
        session.calculate("nobody")
    with pytest.raises(CredentialNotFound):
        session.calculate(Credential("nobody", OathType.TOTP))


def test_calculate_all_codes_totp_recomputes_other_periods_and_skips_hotp_and_touch(
    session: OathSession,
) -> None:
    seed = SEEDS[OathAlgorithm.SHA1]
    session.put(rfc_totp(OathAlgorithm.SHA1), seed)
    session.put(rfc_totp(OathAlgorithm.SHA1, "slow", period=60), seed)
    session.put(rfc_hotp(), seed)
    session.put(Credential("touch", OathType.TOTP, touch=True), seed)
    at = 1111111109

    codes = session.calculate_all(at)

    assert codes == {
        "rfc": "07081804",
        "60/slow": reference_code(seed, at // 60, 8),
        "hotp": None,
        "touch": None,
    }
    assert session.calculate("hotp") == HOTP_RFC4226[0]  # CALCULATE ALL moved no counter


def test_touch_credential_without_a_touch_raises_locked(state_path: Path) -> None:
    open_session(state_path).put(Credential("touch", OathType.HOTP, touch=True), b"secret")
    untouched = open_session(state_path, touch=False)

    with pytest.raises(OathLocked):
        untouched.calculate("touch")

    assert open_session(state_path).calculate("touch") == reference_code(
        b"secret".ljust(14, b"\0"), 0, 6
    )


# --- access code -------------------------------------------------------------------------------


def test_access_code_locks_a_new_session_until_validated(
    session: OathSession, state_path: Path
) -> None:
    session.put(rfc_hotp(), SEEDS[OathAlgorithm.SHA1])
    key = session.derive_key("correct horse")
    session.set_code(key)
    assert session.calculate("hotp") == HOTP_RFC4226[0]  # the session that set it stays open

    locked = open_session(state_path)
    assert locked.select().locked
    with pytest.raises(OathLocked) as caught:
        locked.list()
    assert caught.value.sw == 0x6982

    locked.validate(locked.derive_key("correct horse"))

    assert locked.calculate("hotp") == HOTP_RFC4226[1]


def test_wrong_access_code_is_rejected_and_a_retry_works(
    session: OathSession, state_path: Path
) -> None:
    session.set_code(session.derive_key("right"))
    locked = open_session(state_path)

    with pytest.raises(AccessCodeRejected) as caught:
        locked.validate(locked.derive_key("wrong"))
    assert caught.value.sw == 0x6984

    locked.validate(locked.derive_key("right"))
    assert locked.list() == []


def test_clear_code_unlocks_for_good(session: OathSession, state_path: Path) -> None:
    session.set_code(session.derive_key("pw"))
    session.clear_code()

    assert not open_session(state_path).select().locked


def test_validate_on_an_unprotected_card_does_nothing(session: OathSession) -> None:
    session.validate(b"any key")

    assert session.list() == []


class TamperingConnection(CountingConnection):
    """A card that answers VALIDATE with a proof of some other key: an impostor."""

    def transmit(self, apdu: CommandApdu) -> ResponseApdu:
        answer = super().transmit(apdu)
        if apdu.ins == 0xA3 and answer.ok:
            return ResponseApdu(tlv.encode_tlv(0x75, bytes(20)), answer.sw)
        return answer


def test_validate_raises_when_the_card_fails_its_proof(
    session: OathSession, state_path: Path
) -> None:
    session.set_code(session.derive_key("pw"))
    impostor = OathSession(TamperingConnection(make_card(load_applet(state_path), strict=True)))
    impostor.select()

    with pytest.raises(AccessCodeRejected, match="failed its proof"):
        impostor.validate(impostor.derive_key("pw"))


def test_reset_works_on_a_locked_card(session: OathSession, state_path: Path) -> None:
    session.put(rfc_hotp(), b"secret")
    session.set_code(session.derive_key("forgotten"))
    locked = open_session(state_path)

    locked.reset()

    assert not locked.select().locked
    assert locked.list() == []


# --- codecs ------------------------------------------------------------------------------------


def test_time_challenge_is_the_eight_byte_period_counter() -> None:
    assert time_challenge(59) == bytes.fromhex("0000000000000001")
    assert time_challenge(59.99, 60) == bytes(8)
    assert time_challenge(20000000000) == (666666666).to_bytes(8, "big")
    with pytest.raises(ValueError, match="period"):
        time_challenge(59, 0)
    with pytest.raises(ValueError, match="1970"):
        time_challenge(-1)


@pytest.mark.parametrize(
    ("truncated", "digits", "code"),
    [
        ("4c93cf18", 6, "755224"),
        ("4c93cf18", 8, "84755224"),
        ("80000001", 6, "000001"),  # the top bit is masked off
        ("00000000", 7, "0000000"),
    ],
)
def test_format_code_reduces_and_zero_pads(truncated: str, digits: int, code: str) -> None:
    assert format_code(bytes.fromhex(truncated), digits) == code


@pytest.mark.parametrize(("truncated", "digits"), [(b"\x00" * 3, 6), (b"\x00" * 4, 5)])
def test_format_code_refuses_bad_input(truncated: bytes, digits: int) -> None:
    with pytest.raises(ProtocolError):
        format_code(truncated, digits)


@pytest.mark.parametrize(
    ("card_name", "oath_type", "split"),
    [
        ("60/issuer:account", OathType.TOTP, ("issuer:account", 60)),
        ("issuer:account", OathType.TOTP, ("issuer:account", 30)),
        ("30/x", OathType.TOTP, ("30/x", 30)),
        ("030/x", OathType.TOTP, ("030/x", 30)),
        ("60/x", OathType.HOTP, ("60/x", 30)),
        ("15/60/x", OathType.TOTP, ("60/x", 15)),
    ],
)
def test_split_card_name_reads_the_period_prefix(
    card_name: str, oath_type: OathType, split: tuple[str, int]
) -> None:
    assert split_card_name(card_name, oath_type) == split


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "oath_type": OathType.TOTP}, "name"),
        ({"name": "x" * 65, "oath_type": OathType.TOTP}, "name"),
        ({"name": "x" * 62, "oath_type": OathType.TOTP, "period": 60}, "name"),
        ({"name": "15/x", "oath_type": OathType.TOTP}, "name"),
        ({"name": "x", "oath_type": 0x30}, "oath_type"),
        ({"name": "x", "oath_type": OathType.TOTP, "algorithm": 9}, "algorithm"),
        ({"name": "x", "oath_type": OathType.TOTP, "digits": 5}, "digits"),
        ({"name": "x", "oath_type": OathType.TOTP, "period": 0}, "period"),
        ({"name": "x", "oath_type": OathType.HOTP, "period": 60}, "period"),
        ({"name": "x", "oath_type": OathType.TOTP, "counter": 1}, "counter"),
        ({"name": "x", "oath_type": OathType.HOTP, "counter": 1 << 32}, "counter"),
    ],
)
def test_credential_refuses_what_the_card_cannot_hold(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(CredentialFormatError) as caught:
        Credential(**kwargs)  # type: ignore[arg-type]

    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_put_data_is_yubico_framing_and_parses_back() -> None:
    credential = Credential("h", OathType.HOTP, OathAlgorithm.SHA256, 8, counter=5, touch=True)

    data = put_data(credential, b"short")

    key = b"short".ljust(14, b"\0")
    assert data == (
        b"\x71\x01h" + b"\x73\x10\x12\x08" + key + b"\x78\x02" + b"\x7a\x04\x00\x00\x00\x05"
    )
    assert parse_put(data) == PutRequest(
        b"h", OathType.HOTP, OathAlgorithm.SHA256, 8, key, touch=True, counter=5
    )
    assert "short" not in repr(parse_put(data))


def test_put_data_hashes_keys_longer_than_a_block() -> None:
    long_key = bytes(range(100))

    request = parse_put(put_data(Credential("x", OathType.TOTP), long_key))

    assert request.secret == hashlib.sha1(long_key).digest()  # noqa: S324 - RFC 2104


def test_put_data_refuses_empty_secret_and_unknown_digits() -> None:
    with pytest.raises(CredentialFormatError) as caught:
        put_data(Credential("x", OathType.TOTP), b"")
    assert caught.value.field == "secret"
    with pytest.raises(CredentialFormatError) as caught:
        put_data(Credential("x", OathType.TOTP, digits=None), b"secret")
    assert caught.value.field == "digits"


@pytest.mark.parametrize(
    "answer",
    [
        b"\x72\x01\x21",  # no name
        b"\x72\x02\x31x",  # unknown type
        b"\x71\x02\x21x",  # wrong tag
        b"\x72\x02\x21\xff",  # not UTF-8
        b"\x72\x05\x21x",  # truncated
    ],
)
def test_parse_list_refuses_malformed_answers(answer: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_list(answer)


@pytest.mark.parametrize(
    "answer",
    [
        b"\x71\x01x",  # a name alone
        b"\x71\x01x\x77\x02\x06\x06",  # digits of two bytes
        b"\x71\x01x\x76\x04\x06\x00\x00\x00",  # a short truncated response
        b"\x72\x01x\x77\x01\x06",  # not a name first
    ],
)
def test_parse_calculate_all_refuses_malformed_answers(answer: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_calculate_all(answer)


def test_select_response_round_trips_and_requires_version_and_salt() -> None:
    locked = SelectResponse((5, 2, 0), b"saltsalt", b"\x01" * 8, OathAlgorithm.SHA256)

    assert SelectResponse.decode(locked.encode()) == locked
    assert locked.locked
    with pytest.raises(ProtocolError):
        SelectResponse.decode(b"\x71\x08saltsalt")
    with pytest.raises(ProtocolError):
        SelectResponse.decode(b"\x79\x03\x05\x02\x00")
