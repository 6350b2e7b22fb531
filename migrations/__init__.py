"""Alembic migrations of tokensvc (installed as the package ``tokensvc.migrations``)."""
