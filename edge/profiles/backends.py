"""Which store a ``store`` setting names: ``sqlite:PATH``, ``redis://…`` or ``memory``."""

from __future__ import annotations

from edge.config import ConfigError
from edge.profiles.store import Store

__all__ = ["open_store"]


def open_store(spec: str) -> Store:
    """``sqlite:PATH``, ``redis://HOST:PORT/DB`` (also ``rediss://``, ``unix://``) or
    ``memory`` -> a store (a :class:`~edge.config.ConfigError` for anything else). The
    backends are imported only when named."""
    if spec.startswith("sqlite:"):
        from edge.profiles.sqlite import SQLiteStore

        return SQLiteStore(spec.removeprefix("sqlite:") or "edge-data/profiles.db")
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from edge.profiles.redis import RedisStore

        return RedisStore(spec)
    if spec == "memory":
        from edge.profiles.store import MemoryStore

        return MemoryStore()
    raise ConfigError(f"store: expected sqlite:PATH, redis://HOST:PORT/DB or memory, got {spec!r}")
