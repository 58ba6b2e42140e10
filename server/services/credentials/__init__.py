"""Credentials, one noun per module: rules, lifecycle, PSKC token batches, activation, passwords
and sealing; ``CredentialService`` (re-exported: most callers need only it) joins them."""

from __future__ import annotations

from server.services.credentials.service import CredentialService

__all__ = ["CredentialService"]
