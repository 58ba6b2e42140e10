"""One session class per token application."""
