"""Domain logic with no FastAPI imports: identities, credentials, verifiers, audit."""
