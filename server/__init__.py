"""The akkreditiv service: identities, credentials, authentication and migration."""
