"""One-time-password tokens' firmware: the code display, the USB keyboard token and the NFC tag
share this state and code generator; they differ only in how the code leaves the token."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from devices.protocol import otp, pskc, yubiotp
from firmware_sim import state as state_store


class Model(StrEnum):
    DISPLAY = "otp-display"  # a code display ("kodeviser"): shows TOTP (or HOTP) on a button press
    USB = "otp-usb"  # a USB keyboard token: types its OTP and Enter on touch
    NFC = "otp-nfc"  # an NFC tag: hands out an NDEF URI with a fresh OTP on every read
    AUDIO = "audio-reader"  # an audio code reader ("kodeoplæser"): speaks TOTP, no display


class Algorithm(StrEnum):
    TOTP = "totp"
    HOTP = "hotp"
    YUBICO = "yubico"


MANUFACTURER = "akkreditiv-sim"
SESSION_MAX = 0xFF
USAGE_MAX = 0x7FFF
DEFAULT_URI_PREFIX = "https://otp.akkreditiv.example/#"


@dataclass
class OtpTokenState:
    model: Model
    serial: str
    algorithm: Algorithm
    secret: bytes  # the OATH seed, or the Yubico OTP AES-128 key
    digits: int = 6
    time_step: int = 30
    hash_alg: otp.HashAlg = otp.HashAlg.SHA1
    counter: int = 0  # HOTP moving factor, or the Yubico OTP usage counter
    public_id: bytes = b""
    private_id: bytes = b""
    drift: float = 0.0  # seconds the display's clock is ahead (+) or behind (-)
    layout: str = "us"
    uri_prefix: str = DEFAULT_URI_PREFIX

    def __post_init__(self) -> None:
        problems = []
        if self.algorithm is Algorithm.YUBICO:
            if len(self.secret) != 16 or len(self.public_id) != 6 or len(self.private_id) != 6:
                problems.append("a Yubico OTP token has a 16-byte key and 6-byte ids")
        elif len(self.secret) < 14:
            problems.append("an OATH seed has at least 112 bits (NIST SP 800-63B)")
        if self.digits not in (6, 8):
            problems.append(f"{self.digits} digits; 6 or 8 expected")
        if not 0 <= self.counter <= (USAGE_MAX if self.algorithm is Algorithm.YUBICO else 2**63):
            problems.append(f"counter {self.counter} out of range")
        if self.time_step <= 0:
            problems.append("the time step is positive")
        if problems:
            raise state_store.StateError("OTP token state is damaged: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.value,
            "serial": self.serial,
            "algorithm": self.algorithm.value,
            "secret": self.secret.hex(),
            "digits": self.digits,
            "time_step": self.time_step,
            "hash_alg": self.hash_alg.value,
            "counter": self.counter,
            "public_id": self.public_id.hex(),
            "private_id": self.private_id.hex(),
            "drift": self.drift,
            "layout": self.layout,
            "uri_prefix": self.uri_prefix,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OtpTokenState:
        try:
            return cls(
                model=Model(data["model"]),
                serial=str(data["serial"]),
                algorithm=Algorithm(data["algorithm"]),
                secret=bytes.fromhex(data["secret"]),
                digits=int(data["digits"]),
                time_step=int(data["time_step"]),
                hash_alg=otp.HashAlg(data["hash_alg"]),
                counter=int(data["counter"]),
                public_id=bytes.fromhex(data.get("public_id", "")),
                private_id=bytes.fromhex(data.get("private_id", "")),
                drift=float(data.get("drift", 0.0)),
                layout=str(data.get("layout", "us")),
                uri_prefix=str(data.get("uri_prefix", DEFAULT_URI_PREFIX)),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"OTP token state is damaged: {exc!r}") from exc

    def pskc_key(self) -> pskc.PskcKey:
        """The token as its issuer ships it to a service (RFC 6030)."""
        if self.algorithm is Algorithm.YUBICO:
            return pskc.PskcKey(
                key_id=self.serial,
                serial=self.serial,
                manufacturer=MANUFACTURER,
                algorithm=pskc.ALG_YUBICO_OTP,
                secret=self.secret,
                counter=self.counter,
                public_id=yubiotp.modhex_encode(self.public_id),
                private_id=self.private_id,
                model=self.model.value,
            )
        is_totp = self.algorithm is Algorithm.TOTP
        return pskc.PskcKey(
            key_id=self.serial,
            serial=self.serial,
            manufacturer=MANUFACTURER,
            algorithm=pskc.ALG_TOTP if is_totp else pskc.ALG_HOTP,
            secret=self.secret,
            digits=self.digits,
            counter=None if is_totp else self.counter,
            time_step=self.time_step if is_totp else None,
            time_origin=0 if is_totp else None,
            hash_alg=self.hash_alg.value,
            model=self.model.value,
        )


def new_state(
    model: Model,
    algorithm: Algorithm | None = None,
    *,
    digits: int = 6,
    drift: float = 0.0,
    layout: str = "us",
    hash_alg: otp.HashAlg = otp.HashAlg.SHA1,
) -> OtpTokenState:
    """A freshly manufactured token: random serial and secrets."""
    if algorithm is None:
        algorithm = Algorithm.TOTP if model in (Model.DISPLAY, Model.AUDIO) else Algorithm.YUBICO
    serial = str(secrets.randbelow(9_000_000_000) + 1_000_000_000)
    if algorithm is Algorithm.YUBICO:
        return OtpTokenState(
            model=model,
            serial=serial,
            algorithm=algorithm,
            secret=secrets.token_bytes(16),
            counter=0,
            public_id=b"\x00\x00" + secrets.token_bytes(4),
            private_id=secrets.token_bytes(6),
            layout=layout,
        )
    seed_size = {otp.HashAlg.SHA1: 20, otp.HashAlg.SHA256: 32, otp.HashAlg.SHA512: 64}[hash_alg]
    return OtpTokenState(
        model=model,
        serial=serial,
        algorithm=algorithm,
        secret=secrets.token_bytes(seed_size),
        digits=digits,
        hash_alg=hash_alg,
        drift=drift,
        layout=layout,
    )


def save_state(path: Path, token: OtpTokenState) -> None:
    state_store.save(path, token.model.value, token.to_json())


def create(path: Path, token: OtpTokenState) -> OtpTokenState:
    if path.exists():
        raise state_store.StateError(f"{path} exists already; remove it to make a new token")
    save_state(path, token)
    return token


def load_state(path: Path, model: Model | None = None) -> OtpTokenState:
    document = state_store.load(path, model.value if model else None)
    kind = document.get("kind")
    if kind not in {m.value for m in Model}:
        raise state_store.StateError(f"{path} holds a {kind!r} token, not an OTP token")
    return OtpTokenState.from_json(document)


class OtpGenerator:
    """Makes the token's next code. Counters are saved *before* a code leaves the token, so a
    pulled plug can burn a code but never repeat one."""

    def __init__(
        self,
        token: OtpTokenState,
        persist: Callable[[OtpTokenState], None],
        *,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self._persist = persist
        self._clock = clock
        self._ticks = ticks
        self._lock = threading.Lock()
        self._powered_at = ticks()
        self._session: int | None = None  # Yubico: the session counter of this power-up

    def totp_now(self) -> str:
        t = self.token
        at = self._clock() + t.drift
        return otp.totp(t.secret, at, step=t.time_step, digits=t.digits, alg=t.hash_alg)

    def next_code(self) -> str:
        """The code the token emits now (HOTP and Yubico OTP advance their counters)."""
        with self._lock:
            t = self.token
            if t.algorithm is Algorithm.TOTP:
                return self.totp_now()
            if t.algorithm is Algorithm.HOTP:
                counter = t.counter
                t.counter += 1
                self._persist(t)
                return otp.hotp(t.secret, counter, digits=t.digits, alg=t.hash_alg)
            return self._next_yubico()

    def _next_yubico(self) -> str:
        t = self.token
        if self._session is None or self._session >= SESSION_MAX:
            # The usage counter counts power-ups (and session wrap-arounds), saved at once.
            if t.counter >= USAGE_MAX:
                raise state_store.StateError("the token's usage counter is exhausted")
            t.counter += 1
            self._persist(t)
            self._session = 0
        else:
            self._session += 1
        ticks = int((self._ticks() - self._powered_at) * 8) & 0xFFFFFF
        block = yubiotp.OtpBlock(
            private_id=t.private_id,
            usage_counter=t.counter,
            timestamp=ticks,
            session_counter=self._session,
            random=secrets.randbelow(0x10000),
        )
        return yubiotp.generate_otp(t.public_id, t.secret, block)


def load_generator(path: Path, model: Model | None = None, **kw: Any) -> OtpGenerator:
    token = load_state(path, model)
    return OtpGenerator(token, lambda state: save_state(path, state), **kw)
