"""The commands' side of the ``store`` setting: checked before a command opens it.

``edge segments``, ``edge explain`` and ``edge forget`` only read (or erase from) a
store that exists: they never make an empty SQLite file where a typo pointed, and
``edge import`` makes one only in a directory that exists, and removes it again when
the import that made it wrote nothing. A Redis store must answer before a command
starts. Each problem is one line naming the setting and the fix (the CLI exits 2).
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from edge.config import ConfigError

FIX: Final = "set --store/EDGE_STORE (or store in edge.toml) to the sidecar's store"
SQLITE_DEFAULT: Final = "edge-data/profiles.db"
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
STORE_HELP: Final = "profile store (default: from edge.toml / EDGE_STORE)"


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, as every command that reads the configuration takes it."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: ./edge.toml when present; env EDGE_CONFIG)",
    )


def add_store_flags(parser: argparse.ArgumentParser, store_help: str = STORE_HELP) -> None:
    """``--store`` and ``--config``, for a command that works on the profile store."""
    parser.add_argument("--store", help=store_help)
    add_config_flag(parser)


def check_store(spec: str, *, create: bool = False) -> Path | None:
    """Raise :class:`ConfigError` unless the store *spec* names is there to use: a
    SQLite file that exists (with *create*: in a directory that exists), a Redis that
    answers ``PING``. Returns the SQLite file this call allows to be made (it did not
    exist yet), else None."""
    if spec.startswith("sqlite:"):
        return _check_sqlite(spec, create=create)
    if spec.startswith(REDIS_SCHEMES):
        _ping(spec)
    return None


def _check_sqlite(spec: str, *, create: bool) -> Path | None:
    path = Path(spec.removeprefix("sqlite:") or SQLITE_DEFAULT)
    if path.is_file():
        return None
    if path.exists():
        raise ConfigError(f"store: {spec}: {path} is not a file; {FIX}")
    if not path.parent.is_dir():
        raise ConfigError(
            f"store: {spec}: no directory {path.parent} (a typo?); {FIX}, "
            "e.g. sqlite:/var/lib/shop-edge/profiles.db"
        )
    if not create:
        raise ConfigError(
            f"store: {spec}: no store there (nothing recorded yet, or a typo?); {FIX}"
        )
    return path


def remove_if_empty(path: Path) -> None:
    """Remove the SQLite store at *path* (and its WAL files) if it holds nothing: an
    import that made it and then failed, or applied nothing, leaves no empty store."""
    if not path.is_file():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            held = sum(
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("profiles", "aliases", "claims")
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return  # not one of ours, or busy: leave it alone
    if held:
        return
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            name.unlink()


def _where(spec: str) -> str:
    """host:port (or the socket path) of a Redis URL."""
    parts = urlsplit(spec)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def _ping(spec: str) -> None:
    try:
        import redis
    except ImportError:
        raise ConfigError(
            f"store: {spec}: Redis support is not installed: pip install 'shop-edge[redis]'"
        ) from None
    try:
        client = redis.Redis.from_url(spec, socket_connect_timeout=5, socket_timeout=5)
    except ValueError as exc:
        raise ConfigError(f"store: {spec}: {exc}; {FIX}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(_describe(exc, _where(spec))) from None
    finally:
        client.close()


def _describe(exc: BaseException, where: str) -> str:
    import redis

    if isinstance(exc, redis.AuthenticationError | redis.ResponseError):
        return (
            f"redis at {where} refused us: {exc} (a password? redis://:PASSWORD@HOST:PORT/DB); "
            "set --store/EDGE_STORE"
        )
    reason = str(exc).rstrip(".")
    for cause in (exc.__cause__, exc.__context__):
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror.lower()
            break
    if isinstance(exc, redis.TimeoutError):
        reason = "no answer in time"
    return (
        f"cannot reach redis at {where}: {reason} — is redis-server running? set --store/EDGE_STORE"
    )


def redis_problem(exc: BaseException) -> str | None:
    """One line for a Redis that went away while a command ran (None: not that)."""
    try:
        import redis
    except ImportError:
        return None
    if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return None
    found = str(exc)
    where = "the configured address"
    if " connecting to " in found:  # "Error 111 connecting to HOST:PORT. Connection refused."
        where = found.split(" connecting to ", 1)[1].split(". ", 1)[0]
    return _describe(exc, where)
