"""Throttles that decay, in place of locks: failures slow down where they come from and never
change what the person can do from anywhere else.

Each key is a counter of the generic cell rate algorithm (a leaky bucket kept as one time): a
failure moves it on by the key's interval; it drains at one failure per interval; a check is
refused (``Throttled``, with the seconds to wait) while more than ``burst`` failures are in
it. The keys of a login factor:

- the source network (an IPv4 address, an IPv6 /64) whoever it names: one attacker trying many
  people;
- the subject named from that network (the keyed digest of the number typed, so a number
  nobody has is throttled exactly as one somebody has): one attacker trying one person. The
  person at their own address is not slowed by failures from anywhere else;
- the person from anywhere: never refuses (that would be the lock again), but an audit alert
  when failures pile up from many networks, for the operators.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.services.login.errors import Throttled
from server.storage.repositories import (
    CredentialRepository,
    account_limit_key,
    network_throttle_key,
    subject_throttle_key,
)
from server.storage.throttle_repositories import ThrottleRepository, ThrottleState


@dataclass(frozen=True)
class Rate:
    """``burst`` failures at once, then one more each ``interval``: the decay."""

    burst: int
    interval: dt.timedelta

    @property
    def interval_ms(self) -> int:
        return int(self.interval.total_seconds() * 1000)

    def wait_s(self, state: ThrottleState | None, now: dt.datetime) -> int:
        """Seconds until the next attempt may be checked (0: now)."""
        if state is None:
            return 0
        debt = state.tat_ms - _ms(now)
        over = debt - (self.burst - 1) * self.interval_ms
        return 0 if over <= 0 else math.ceil(over / 1000)

    def crossed(self, state: ThrottleState, now: dt.datetime) -> bool:
        """Whether the failure that left ``state`` was the one that filled the bucket."""
        debt = state.tat_ms - _ms(now)
        limit = self.burst * self.interval_ms
        return debt >= limit > debt - self.interval_ms


# One network, whoever it names: a household, an office or a school behind one address has
# room for its people's mistakes; a single source trying many people gets 4 a minute.
NETWORK_RATE = Rate(burst=40, interval=dt.timedelta(seconds=15))
# One person from one network: five wrong tries at once, then one every two minutes.
SUBJECT_RATE = Rate(burst=5, interval=dt.timedelta(minutes=2))
# One person from anywhere: never refuses; 30 failures faster than one a minute is an alert.
ALERT_RATE = Rate(burst=30, interval=dt.timedelta(minutes=1))


# A code token or key card given three wrong codes after another factor was proven refuses
# codes for 5 minutes, then 15, 45, 135, and at most 4 hours: never for good.
TOKEN_BLOCK = dt.timedelta(minutes=5)
TOKEN_BLOCK_GROWTH = 3
TOKEN_BLOCK_LONGEST = dt.timedelta(hours=4)


def block_length(blocks_before: int) -> dt.timedelta:
    """How long a token's next temporary block lasts, after ``blocks_before`` in a row."""
    length: dt.timedelta = TOKEN_BLOCK * TOKEN_BLOCK_GROWTH ** min(blocks_before, 8)
    return min(length, TOKEN_BLOCK_LONGEST)


def network_of(source: str) -> str:
    """The network a client address counts as: an IPv4 address itself, an IPv6 address's /64
    (one subscriber's), an IPv4-mapped IPv6 address as its IPv4 address. Anything else (a
    test client's name) counts as itself."""
    try:
        address = ipaddress.ip_address(source.strip())
    except ValueError:
        return source[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


class Throttles:
    """The throttles of one request's transaction."""

    def __init__(
        self,
        session: Session,
        audit: Callable[[str, dict[str, Any]], None] = lambda event, details: None,
    ) -> None:
        self._rows = ThrottleRepository(session)
        self._audit = audit

    @staticmethod
    def guard(
        network: ThrottleState | None, subject: ThrottleState | None, now: dt.datetime
    ) -> None:
        """Refuse, before any check, while the network or the subject from it is throttled."""
        wait = max(NETWORK_RATE.wait_s(network, now), SUBJECT_RATE.wait_s(subject, now))
        if wait:
            raise Throttled.after(wait)

    def failed(
        self,
        *,
        network: str,
        subject: str,
        alert_key: str | None,
        now: dt.datetime,
        what: str = "login",
    ) -> None:
        """Count one failure on the network's and the subject's counters, and on the person's
        counter from anywhere (``alert_key``: none for a subject nobody has), whose filling
        is an alert in the audit log."""
        at = _ms(now)
        self._rows.charge(network_throttle_key(network), at, NETWORK_RATE.interval_ms)
        self._rows.charge(subject_throttle_key(subject, network), at, SUBJECT_RATE.interval_ms)
        if alert_key is None:
            return
        everywhere = self._rows.charge(alert_key, at, ALERT_RATE.interval_ms)
        if ALERT_RATE.crossed(everywhere, now):
            self._audit(
                "authentication.alert",
                {
                    "subject": alert_key,
                    "what": what,
                    "failures": everywhere.failures,
                    "reason": "many failures from several networks",
                },
            )

    def states(
        self, network: str, subject: str
    ) -> tuple[ThrottleState | None, ThrottleState | None]:
        """The network's and the subject's counters (for a caller that has not read them)."""
        keys = (network_throttle_key(network), subject_throttle_key(subject, network))
        found = self._rows.states(keys)
        return found.get(keys[0]), found.get(keys[1])

    def succeeded(self, *, network: str, subject: str, had: bool = True) -> None:
        """A proven factor empties the subject's counter for that network (``had``: whether
        the request read one, so a request with nothing to empty writes nothing)."""
        if had:
            self._rows.clear(subject_throttle_key(subject, network))


def person_throttle_prefixes(subject_digest: str, identity_id: uuid.UUID) -> tuple[str, ...]:
    """The key prefixes of every throttle that names one person: the subject from each
    network (by the digest of their number, and by their identity), and their alert counter."""
    return (
        subject_throttle_key(subject_digest, ""),
        subject_throttle_key(account_limit_key(identity_id), ""),
        account_limit_key(identity_id),
    )


class ThrottleLifting:
    """An operator's lifting of what failures left on one person: the throttles naming them
    from every network, and the temporary blocks of their tokens and key cards."""

    def __init__(self, session: Session) -> None:
        self._rows = ThrottleRepository(session)
        self._credentials = CredentialRepository(session)

    def lift(self, subject_digest: str, identity_id: uuid.UUID) -> tuple[int, int]:
        """How many throttles and how many credentials' blocks were lifted."""
        throttles = sum(
            self._rows.clear_prefix(prefix)
            for prefix in person_throttle_prefixes(subject_digest, identity_id)
        )
        return throttles, self._credentials.clear_temporary_blocks(identity_id)
