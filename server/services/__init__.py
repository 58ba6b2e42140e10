"""server/services."""
