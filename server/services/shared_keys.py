"""Every process that serves one database holds the same keys: the first to start records a
fingerprint of each key file's key in the database, and a process whose keys differ (a machine
that made keys of its own, a file left behind) is refused before it answers anyone."""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping

from sqlalchemy.orm import Session, sessionmaker

from server.services.errors import KeyMaterialRejected
from server.storage.key_fingerprints import KeyFingerprintRepository

# Which setting names the file of each key.
KEY_FILES = {
    "kek": "AKKREDITIV_KEK_FILE",
    "pseudonym": "AKKREDITIV_PSEUDONYM_KEY_FILE",
    "signing": "AKKREDITIV_SIGNING_KEY_FILE",
    "id_token_rsa": "AKKREDITIV_ID_TOKEN_RSA_KEY_FILE",
    "keycard_pepper": "AKKREDITIV_KEYCARD_PEPPER_FILE",
    "piv_ca": "AKKREDITIV_PIV_CA_KEY_FILE",
    "audit_checkpoint": "AKKREDITIV_AUDIT_CHECKPOINT_KEY_FILE",
}


def check_shared_keys(
    sessions: sessionmaker[Session], fingerprints: Mapping[str, str], now: dt.datetime
) -> None:
    """Record the fingerprints the database has none of yet; ``KeyMaterialRejected`` naming
    every key whose fingerprint differs from the one recorded."""
    unknown = set(fingerprints) - set(KEY_FILES)
    if unknown:
        raise ValueError(f"no key file is known for {sorted(unknown)}")
    with sessions.begin() as session:
        recorded = KeyFingerprintRepository(session).claim(fingerprints, now)
    differing = [
        name
        for name, fingerprint in fingerprints.items()
        if not hmac.compare_digest(recorded.get(name, ""), fingerprint)
    ]
    if differing:
        files = ", ".join(f"{name} ({KEY_FILES[name]})" for name in differing)
        raise KeyMaterialRejected(
            f"these keys differ from the ones this database was first served with: {files}; "
            "every process that serves one database needs the same key files"
        )
