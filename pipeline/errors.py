"""Errors shared across stages (a module of its own so that anything may import it)."""


class DataError(ValueError):
    """Dataset content or settings that cannot give a trustworthy table."""
