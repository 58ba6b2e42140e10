"""Database tables, the engine factory and repositories (SQLAlchemy 2, Alembic)."""
