"""server/storage."""
