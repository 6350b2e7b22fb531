"""Persistence: SQLAlchemy models, async queries, migrations and the SQLite process lock."""
