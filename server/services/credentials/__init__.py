"""Credentials, one noun per module: the rules (transition table, limits), the lifecycle, PSKC
token batches, activation, passwords and how secrets are sealed; ``service`` joins them.

``CredentialService`` is re-exported here: it is the one name most callers need.
"""

from __future__ import annotations

from server.services.credentials.service import CredentialService

__all__ = ["CredentialService"]
