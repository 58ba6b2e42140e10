"""Property tests: the OTP codecs (HOTP/TOTP, Yubico OTP, PSKC) on arbitrary and near-valid
input raise only their own typed errors, and what they write they read back."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.errors import InvalidOtp, MalformedOtp, PskcError
from devices.protocol.otp import HashAlg, hotp, totp, totp_counter
from devices.protocol.pskc import (
    ALG_HOTP,
    ALG_TOTP,
    ALG_YUBICO_OTP,
    PskcKey,
    parse_pskc,
    write_pskc,
)
from devices.protocol.yubiotp import (
    CRC_RESIDUAL,
    MODHEX_ALPHABET,
    OtpBlock,
    ParsedOtp,
    crc16,
    generate_otp,
    modhex_decode,
    modhex_encode,
    parse_otp,
)

FUZZ = settings(max_examples=200, deadline=None)
KEY = bytes(range(16))

blocks = st.builds(
    OtpBlock,
    private_id=st.binary(min_size=6, max_size=6),
    usage_counter=st.integers(0, 0x7FFF),
    timestamp=st.integers(0, 0xFFFFFF),
    session_counter=st.integers(0, 0xFF),
    random=st.integers(0, 0xFFFF),
)
modhex_text = st.text(alphabet=MODHEX_ALPHABET + MODHEX_ALPHABET.upper(), max_size=60)


# --- HOTP / TOTP ------------------------------------------------------------------------------


@FUZZ
@given(
    secret=st.binary(min_size=1, max_size=80),
    counter=st.integers(0, (1 << 64) - 1),
    digits=st.integers(6, 10),
    alg=st.sampled_from(HashAlg),
)
def test_hotp_is_always_the_asked_number_of_decimal_digits(
    secret: bytes, counter: int, digits: int, alg: HashAlg
) -> None:
    code = hotp(secret, counter, digits, alg)
    assert len(code) == digits
    assert code.isascii()
    assert code.isdigit()


@FUZZ
@given(
    secret=st.binary(min_size=1, max_size=40),
    at=st.floats(0, 1e11, allow_nan=False),
    step=st.integers(1, 3600),
)
def test_totp_is_hotp_of_its_counter(secret: bytes, at: float, step: int) -> None:
    counter = totp_counter(at, step)
    assert counter * step <= at < (counter + 1) * step
    assert totp(secret, at, step) == hotp(secret, counter)


# --- Yubico OTP -------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=40))
def test_modhex_round_trips_in_either_case(data: bytes) -> None:
    text = modhex_encode(data)
    assert modhex_decode(text) == data
    assert modhex_decode(text.upper()) == data


@FUZZ
@given(blocks)
def test_every_encoded_block_has_the_crc_residual(block: OtpBlock) -> None:
    assert crc16(block.encode()) == CRC_RESIDUAL
    assert OtpBlock.decode(block.encode()) == block


@FUZZ
@given(block=blocks, public_id=st.binary(max_size=8), key=st.binary(min_size=16, max_size=16))
def test_generate_then_parse_round_trips_any_block(
    block: OtpBlock, public_id: bytes, key: bytes
) -> None:
    otp = generate_otp(public_id, key, block)
    assert len(otp) == 2 * len(public_id) + 32
    assert parse_otp(otp, key, public_id_length=len(public_id)) == ParsedOtp(public_id, block)


@FUZZ
@given(text=st.text(max_size=60) | modhex_text, public_id_length=st.integers(0, 8))
def test_parse_otp_on_any_text_raises_only_otp_errors(text: str, public_id_length: int) -> None:
    try:
        parsed = parse_otp(text, KEY, public_id_length=public_id_length)
    except (MalformedOtp, InvalidOtp):
        return
    assert len(parsed.public_id) == public_id_length


@FUZZ
@given(raw=st.binary(min_size=16, max_size=16), public_id=st.binary(max_size=8))
def test_random_ciphertext_fails_the_crc_unless_it_decrypts_to_a_block(
    raw: bytes, public_id: bytes
) -> None:
    # One random block in 65536 passes the CRC: the check is what tells a wrong key.
    decryptor = Cipher(algorithms.AES(KEY), modes.ECB()).decryptor()  # noqa: S305
    plain = decryptor.update(raw) + decryptor.finalize()
    otp = modhex_encode(public_id + raw)
    if crc16(plain) == CRC_RESIDUAL:
        assert parse_otp(otp, KEY, public_id_length=len(public_id)).public_id == public_id
    else:
        with pytest.raises(InvalidOtp, match="CRC"):
            parse_otp(otp, KEY, public_id_length=len(public_id))


# --- PSKC -------------------------------------------------------------------------------------

xml_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")) | st.sampled_from("\t\n\r"),
    max_size=20,
)


@st.composite
def pskc_keys(draw: st.DrawFn) -> PskcKey:
    algorithm = draw(st.sampled_from([ALG_HOTP, ALG_TOTP, ALG_YUBICO_OTP]) | xml_text.filter(bool))
    oath = algorithm in (ALG_HOTP, ALG_TOTP)
    yubico = algorithm == ALG_YUBICO_OTP
    return PskcKey(
        key_id=draw(xml_text.filter(bool)),
        serial=draw(xml_text),
        manufacturer=draw(xml_text),
        algorithm=algorithm,
        secret=draw(st.binary(min_size=1, max_size=64)),
        digits=draw(st.none() | (st.integers(6, 10) if oath else st.integers(1, 64))),
        counter=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        time_step=draw(st.none() | st.integers(1, 1 << 40)),
        time_origin=draw(st.none() | st.integers(0, 1 << 40)),
        hash_alg=draw(st.none() | st.sampled_from(["SHA1", "SHA256", "SHA512"])),
        public_id=draw(st.none() | st.binary(max_size=16).map(modhex_encode)) if yubico else None,
        private_id=draw(st.none() | st.binary(min_size=6, max_size=6)) if yubico else None,
        model=draw(st.none() | xml_text),
    )


@FUZZ
@given(keys=st.lists(pskc_keys(), max_size=3), psk=st.none() | st.binary(min_size=16, max_size=16))
def test_write_then_parse_round_trips_any_keys(keys: list[PskcKey], psk: bytes | None) -> None:
    assert parse_pskc(write_pskc(keys, psk=psk), psk=psk) == keys


@FUZZ
@given(st.binary(max_size=300))
def test_parse_pskc_on_any_bytes_raises_only_pskc_error(data: bytes) -> None:
    try:
        parse_pskc(data)
    except PskcError:
        pass


@st.composite
def near_pskc(draw: st.DrawFn) -> bytes:
    """A valid document, then cut, with a byte changed, or with a span deleted or repeated, so
    that the parser gets past XML well-formedness far more often than random bytes do."""
    raw = bytearray(write_pskc(draw(st.lists(pskc_keys(), min_size=1, max_size=2)), psk=KEY))
    start = draw(st.integers(0, len(raw) - 1))
    end = draw(st.integers(start, min(len(raw), start + 40)))
    mutation = draw(st.sampled_from(["cut", "change", "delete", "repeat"]))
    if mutation == "cut":
        del raw[start:]
    elif mutation == "change":
        raw[start] = draw(st.integers(0, 0xFF))
    elif mutation == "delete":
        del raw[start:end]
    else:
        raw[start:start] = raw[start:end]
    return bytes(raw)


@FUZZ
@given(near_pskc())
def test_parse_pskc_on_damaged_documents_raises_only_pskc_error(data: bytes) -> None:
    try:
        keys = parse_pskc(data, psk=KEY)
    except PskcError:
        return
    assert all(isinstance(key, PskcKey) for key in keys)
