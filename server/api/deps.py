"""The services a request needs, built once per app from settings (the composition of the
server), and the ``Annotated`` aliases routes use to receive them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from server.services.factors import PasswordCheck
from server.services.passwords import Passwords
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.tokens_jwt import AssertionSigner, SigningKey
from server.settings import Settings


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    secrets: SecretBox
    passwords: Passwords
    pseudonyms: Pseudonyms
    signer: AssertionSigner
    password_decoy: str
    clock: Callable[[], float] = time.time


def build_services(settings: Settings, sessions: sessionmaker[Session]) -> Services:
    create = settings.create_keys
    passwords = Passwords()
    return Services(
        settings=settings,
        sessions=sessions,
        secrets=SecretBox.from_file(settings.kek_file, create=create),
        passwords=passwords,
        password_decoy=PasswordCheck.make_decoy(passwords),
        pseudonyms=Pseudonyms.from_file(settings.pseudonym_key_file, create=create),
        signer=SigningKey.from_file(settings.signing_key_file, create=create).signer(),
    )


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_session(request: Request) -> Iterator[Session]:
    """One database transaction per request: committed when the route returns normally,
    rolled back on any error."""
    services = get_services(request)
    with services.sessions() as session, session.begin():
        yield session


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
