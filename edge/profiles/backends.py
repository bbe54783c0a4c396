"""Which store a ``store`` setting names: ``sqlite:PATH``, ``redis://…`` or ``memory``;
and the store the sidecar serves from, behind its deadlines and circuit breaker."""

from __future__ import annotations

from edge.config import Config, ConfigError
from edge.profiles.events import set_attribution_window
from edge.profiles.store import Breaker, GuardedStore, Store

__all__ = ["guarded", "open_store", "served_store"]


def open_store(
    spec: str, *, read_timeout: float | None = None, write_timeout: float | None = None
) -> Store:
    """``sqlite:PATH``, ``redis://HOST:PORT/DB`` (also ``rediss://``, ``unix://``) or
    ``memory`` -> a store (a :class:`~edge.config.ConfigError` for anything else). The
    backends are imported only when named. The timeouts (seconds) are the backends'
    own bounds: SQLite's lock waits (reads, writes), Redis's socket timeouts (writes:
    :func:`guarded` bounds reads); None keeps the defaults made for the command line."""
    if spec.startswith("sqlite:"):
        from edge.profiles.sqlite import SQLiteStore

        return SQLiteStore(
            spec.removeprefix("sqlite:") or "edge-data/profiles.db",
            read_timeout=30.0 if read_timeout is None else read_timeout,
            write_timeout=30.0 if write_timeout is None else write_timeout,
        )
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from edge.profiles.redis import RedisStore

        return RedisStore(spec, timeout=write_timeout)
    if spec == "memory":
        from edge.profiles.store import MemoryStore

        return MemoryStore()
    raise ConfigError(f"store: expected sqlite:PATH, redis://HOST:PORT/DB or memory, got {spec!r}")


def served_store(config: Config) -> Store:
    """The store ``config.store`` names, with the sidecar's deadlines."""
    return open_store(
        config.store,
        read_timeout=config.store_timeout_ms / 1000,
        write_timeout=config.store_write_timeout_ms / 1000,
    )


def guarded(store: Store, config: Config) -> GuardedStore:
    """*store* behind the deadlines and the circuit breaker of *config* (a store that
    is already guarded is kept as it is). Sets the attribution window of *config* for
    the orders this process records."""
    set_attribution_window(config.attribution_seconds)
    if isinstance(store, GuardedStore):
        return store
    return GuardedStore(
        store,
        read_timeout=config.store_timeout_ms / 1000,
        write_timeout=config.store_write_timeout_ms / 1000,
        breaker=Breaker(config.store_breaker_failures, config.store_breaker_cooldown),
    )
