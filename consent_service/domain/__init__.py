"""The consent rules in plain Python: no Flask, SQLAlchemy or SendGrid (an import-linter contract checks)."""


class ConsentServiceError(Exception):
    """Base of every error this service raises on purpose; its message is meant for a person."""
