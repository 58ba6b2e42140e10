"""KeyCardService and its pieces: the pepper file, the sealed digest form, decoy key numbers, and
(on SQLite and PostgreSQL) two logins racing to spend the same code, of which one wins."""

from __future__ import annotations

import datetime as dt
import os
import random
import stat
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.domain.model import CredentialKind, Level
from server.services.authentication import AuthenticationService
from server.services.credentials import CredentialService
from server.services.credentials.admission import IN_PERSON
from server.services.errors import KeyMaterialRejected, SecretUnreadable
from server.services.keycard.cards import decode_digests, encode_digests
from server.services.keycard.login import decoy_indexes
from server.services.keycard.pepper import KeyCardSecrets
from server.services.keycard.service import KeyCardService
from server.services.login.gate import LoginTransactions
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.tokens_jwt import SigningKey
from server.services.verifiers import KeyCard
from server.storage.errors import StaleWrite
from server.storage.repositories import IdentityRepository
from server.storage.tables import AuthTransaction, Credential, Identity

PEPPER = b"pepper-for-key-card-tests-only-32"


# --- the pepper file --------------------------------------------------------------------------


def test_the_pepper_file_is_made_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keycard-pepper.bin"
    path.parent.mkdir()
    made = KeyCardSecrets.from_file(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == made.pepper
    assert len(made.pepper) == 32
    assert KeyCardSecrets.from_file(path).pepper == made.pepper
    assert "pepper=<hidden>" in repr(made)
    assert made.pepper.hex() not in repr(made)


def test_a_missing_short_or_shared_pepper_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialRejected):
        KeyCardSecrets.from_file(tmp_path / "missing.bin")
    short = tmp_path / "short.bin"
    short.write_bytes(os.urandom(16))
    short.chmod(0o600)
    with pytest.raises(KeyMaterialRejected):
        KeyCardSecrets.from_file(short)
    shared = tmp_path / "shared.bin"
    shared.write_bytes(os.urandom(32))
    shared.chmod(0o640)
    with pytest.raises(KeyMaterialRejected):
        KeyCardSecrets.from_file(shared)


def test_derived_keys_differ_by_purpose_and_from_the_pepper() -> None:
    keys = KeyCardSecrets(PEPPER)
    fido, card = keys.derive("fido2-decoy"), keys.derive("key-card-decoy")
    assert len(fido) == len(card) == 32
    assert len({fido, card, PEPPER}) == 3
    assert KeyCardSecrets(PEPPER).derive("fido2-decoy") == fido
    assert KeyCardSecrets(os.urandom(32)).derive("fido2-decoy") != fido


# --- storage form and decoys ------------------------------------------------------------------


def test_digests_survive_the_sealed_form_and_a_damaged_one_is_refused() -> None:
    state = KeyCard.new("KC-1").state(PEPPER)
    blob = encode_digests(state)
    assert decode_digests(blob) == (state.code_digits, state.salt, state.digests)
    for damaged in (blob[:-1], b"\x02" + blob[1:], blob[:30], blob[:22] + b"x" + blob[23:]):
        with pytest.raises(SecretUnreadable):
            decode_digests(damaged)


def test_decoy_key_numbers_are_a_fixed_card_per_subject() -> None:
    key = os.urandom(32)
    card = decoy_indexes(key, b"identity:one")
    assert len(card) == len(set(card)) == 148
    assert all(len(index) == 4 and index.isdigit() for index in card)
    assert decoy_indexes(key, b"identity:one") == card
    assert set(decoy_indexes(key, b"identity:two")) != set(card)
    assert set(decoy_indexes(os.urandom(32), b"identity:one")) != set(card)


def test_decoy_key_numbers_are_spread_like_a_real_cards() -> None:
    """Real key numbers are a uniform sample of 0000-9999; so must decoys be (a skewed spread
    would give them away). 50 cards: 7,400 numbers, each thousand holding about a tenth."""
    key = os.urandom(32)
    numbers = [int(i) for n in range(50) for i in decoy_indexes(key, b"subject:%d" % n)]
    per_thousand = [sum(1 for i in numbers if i // 1000 == t) for t in range(10)]
    assert all(600 <= count <= 880 for count in per_thousand), per_thousand


# --- racing logins ----------------------------------------------------------------------------


class World:
    def __init__(self, sessions: sessionmaker[Session], tmp_path: Path) -> None:
        self.sessions = sessions
        self.tmp_path = tmp_path
        self.box = SecretBox([os.urandom(32)])
        self.keys = KeyCardSecrets(PEPPER)
        with sessions() as session, session.begin():
            identity = IdentityRepository(session).add(
                Identity(
                    person_number="010190-1234",
                    name="Test Person",
                    identity_assurance=Level.SUBSTANTIAL,
                )
            )
            self.identity_id = identity.id

    def cards(self, session: Session) -> KeyCardService:
        credentials = CredentialService(session, self.box, Passwords(), clock=time.time)
        rng = random.Random(3)  # noqa: S311 - seeded so a failure repeats; production: secrets
        return KeyCardService(session, self.box, credentials, self.keys, clock=time.time, rng=rng)

    def login(self) -> uuid.UUID:
        with self.sessions() as session, session.begin():
            auth = AuthenticationService(
                session,
                signer=SigningKey.from_file(self.tmp_path / "signing.pem", create=True).signer(),
                pseudonyms=Pseudonyms.from_file(self.tmp_path / "pseudonym.key", create=True),
                issuer="https://idp.example",
                clock=lambda: dt.datetime.now(dt.UTC),
            )
            transaction = auth.begin("https://sp.example", Level.LOW)
            auth.identify(transaction.id, self.identity_id)
            transaction_id: uuid.UUID = transaction.id
            return transaction_id


def test_two_logins_racing_for_one_code_spend_it_once(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    world = World(sessions, tmp_path)
    with sessions() as session, session.begin():
        issued = world.cards(session).issue(world.identity_id)
        codes = dict(issued.card.pairs)
        credential_id = issued.credential.id
    with sessions() as session, session.begin():
        index = world.cards(session).activation_begin(credential_id)
    with sessions() as session, session.begin():
        world.cards(session).activation_complete(credential_id, codes[index], added_by=IN_PERSON)
    first, second = world.login(), world.login()
    with sessions() as session, session.begin():
        index = world.cards(session).login_begin(first)
        row = session.get(AuthTransaction, second)
        assert row is not None
        # Both were shown the same number.
        LoginTransactions(session, lambda: row.created_at).set_pending(
            row, CredentialKind.KEY_CARD, state={"index": index}
        )

    late = sessions()
    late.begin()
    try:
        # Read before the first login commits (and held: the identity map is weak).
        read_early = late.get(Credential, credential_id)
        assert read_early is not None
        with sessions() as session, session.begin():
            world.cards(session).verify_login(first, world.identity_id, codes[index])
        with pytest.raises(StaleWrite):
            world.cards(late).verify_login(second, world.identity_id, codes[index])
    finally:
        late.rollback()
        late.close()
    with sessions() as session:
        stored = session.get(Credential, credential_id)
        assert stored is not None
        assert index in stored.public_data["used"]
        assert stored.public_data["remaining"] == 146
