"""Throttles that decay, in place of locks: failures slow down where they come from and never
change what the person can do from anywhere else.

Each key is a counter of the generic cell rate algorithm (a leaky bucket kept as one time): a
failure moves it on by the key's interval; it drains at one failure per interval; a check is
refused (``Throttled``, with the seconds to wait) while more than ``burst`` failures are in
it. The keys of a login factor:

- the source network (an IPv4 address, an IPv6 /64) whoever it names: one attacker trying many
  people;
- the subject named from that network (the keyed digest of the number typed, so a number
  nobody has is throttled exactly as one somebody has): one attacker trying one person;
- the subject from everywhere: many attackers trying one person. Filling it is an audit
  alert, and while it is full it slows only networks the person has never proven a factor
  from: the person at their own address (a familiar network, remembered for 180 days) is
  never slowed by failures from anywhere else, and nothing is ever locked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from server.services.login.errors import Throttled
from server.storage.repositories import (
    CredentialRepository,
    account_limit_key,
    everywhere_throttle_key,
    familiar_network_key,
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
# One person from everywhere: 30 failures at once, then one every five minutes from the
# networks the person never proved a factor from (an alert when it fills). From 100
# attacking networks that is 288 guesses a day, not 100 times that.
EVERYWHERE_RATE = Rate(burst=30, interval=dt.timedelta(minutes=5))
# How long a network a person proved a factor from stays theirs (unslowed by an attack).
FAMILIAR_FOR = dt.timedelta(days=180)

# A key typed into the operator console (to sign in, or a second operator's approval): 10
# failures from one source address within 15 minutes lock it for 15 minutes (``rate_limits``,
# fixed windows).
KEY_ENTRY_WINDOW = dt.timedelta(minutes=15)
KEY_ENTRY_MAX_FAILURES = 10

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


class Standing(NamedTuple):
    """The counters a failure-prone step reads before it checks anything."""

    network: ThrottleState | None
    subject: ThrottleState | None
    everywhere: ThrottleState | None
    familiar: bool


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
    def guard(standing: Standing, now: dt.datetime) -> None:
        """Refuse, before any check, while the network, the subject from it, or (from a
        network the person never proved a factor from) the subject from everywhere is full."""
        waits = [
            NETWORK_RATE.wait_s(standing.network, now),
            SUBJECT_RATE.wait_s(standing.subject, now),
        ]
        if not standing.familiar:
            waits.append(EVERYWHERE_RATE.wait_s(standing.everywhere, now))
        wait = max(waits)
        if wait:
            raise Throttled.after(wait)

    def failed(
        self,
        *,
        network: str,
        subject: str,
        now: dt.datetime,
        identity: str | None = None,
        what: str = "login",
    ) -> None:
        """Count one failure on every counter; the failure that fills the subject's counter
        from everywhere is an alert in the audit log (naming ``identity``, when it is a
        person's)."""
        at = _ms(now)
        self._rows.charge(network_throttle_key(network), at, NETWORK_RATE.interval_ms)
        self._rows.charge(subject_throttle_key(subject, network), at, SUBJECT_RATE.interval_ms)
        everywhere = self._rows.charge(
            everywhere_throttle_key(subject), at, EVERYWHERE_RATE.interval_ms
        )
        if identity is not None and EVERYWHERE_RATE.crossed(everywhere, now):
            self._audit(
                "authentication.alert",
                {
                    "identity": identity,
                    "what": what,
                    "failures": everywhere.failures,
                    "reason": "many failures from several networks",
                },
            )

    def standing(self, network: str, subject: str, now: dt.datetime) -> Standing:
        """The counters of ``subject`` from ``network`` (for a caller that has not read them
        with what it reads anyway, as the login's first statement does)."""
        keys = (
            network_throttle_key(network),
            subject_throttle_key(subject, network),
            everywhere_throttle_key(subject),
            familiar_network_key(subject, network),
        )
        found = self._rows.states(keys)
        seen = found.get(keys[3])
        familiar = seen is not None and seen.tat_ms > _ms(now)
        return Standing(found.get(keys[0]), found.get(keys[1]), found.get(keys[2]), familiar)

    def succeeded(
        self, *, network: str, subject: str, now: dt.datetime, standing: Standing | None = None
    ) -> None:
        """A proven factor empties the subject's counter for that network and makes the
        network the person's own (``standing``: what the request read, so a request with
        nothing to change writes nothing)."""
        if standing is None or standing.subject is not None:
            self._rows.clear(subject_throttle_key(subject, network))
        if standing is None or not standing.familiar:
            until = _ms(now + FAMILIAR_FOR)
            self._rows.mark(familiar_network_key(subject, network), until)


def person_throttle_prefixes(subject_digest: str, identity_id: uuid.UUID) -> tuple[str, ...]:
    """The key prefixes of every throttle that names one person (by the digest of their
    number, and by their identity): from each network and from everywhere."""
    subjects = (subject_digest, account_limit_key(identity_id))
    return tuple(
        key
        for subject in subjects
        for key in (subject_throttle_key(subject, ""), everywhere_throttle_key(subject))
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
