"""The shared store: one Redis server behind every sidecar replica of a shop.

Layout, every key under ``prefix`` (default ``edge:``):

- ``p:{key}``     the profile, msgpack as :func:`edge.profiles.model.encode` writes it;
- ``a:{alias}``   the key of the profile that absorbed *alias*;
- ``ak:{key}``    the set of aliases written for *key*, so deleting a profile finds
  its aliases without a scan (members may be stale: an alias later re-pointed
  elsewhere stays listed, and deletion checks where it points before removing it);
- ``c:{claim}``   an idempotency claim (an order or event id already applied), kept
  for ``CLAIM_TTL`` (400 days, as long as the daily counters look back);
- ``t:{day}``     the daily aggregates of the units first exposed that day (unix day
  number): a hash, field ``{placement}\x1f{arm}\x1f{n}`` for the n-th of
  :data:`~edge.profiles.model.TALLY_FIELDS` (``...\x1f{segments}`` after it for the
  arm's units in that combination of segments), added to (``HINCRBY``/``HINCRBYFLOAT``) in
  the ``MULTI`` that writes the profiles; ``tdays``: the set of those days;
- ``products``    the products learned from the shop's pages (one msgpack blob,
  shared by the replicas: the last writer's view wins, each learns again anyway);
- ``snapshots``   a hash: per day (``2026-12-07``) that day's segment counts (a msgpack
  blob, :mod:`edge.snapshots`);
- ``due``         the due index: a sorted set, member a profile key, score its
  ``Profile.due`` (absent when 0), written in the ``MULTI`` that writes the profile;
- ``m:{id}``      an outbox message: a hash (``msg`` the msgpack :class:`OutMessage`,
  ``state``, ``attempts``, ``next_at``, ``error``, ``created``, ``updated``,
  ``visitor``), created with ``HSETNX`` in the profile's ``MULTI`` (an id that exists is
  left as it is); ``mq``: the pending ids by ``next_at``; ``mst:{state}``: each state's
  ids by creation; ``mv:{visitor}``: a visitor's ids (erasure);
- ``cf:{pool}``, ``ck:{pool}``, ``cg:{pool}``  a coupon pool's free codes, every code
  ever loaded (never loaded twice), and message id -> the code it was given.

:meth:`RedisStore.transact` is optimistic: ``WATCH`` the profiles and claims, read
them, run the mutation on freshly decoded copies, then ``MULTI``/``EXEC`` the writes.
If another replica wrote a watched key meanwhile, ``EXEC`` does nothing and the whole
read-compute-write runs again, so the mutation may be called more than once.

Durability: ``transact`` returns after ``EXEC`` succeeded, and Redis replies to
``EXEC`` only after applying it; whether it survives a Redis crash depends on the
server's ``appendonly``/``appendfsync`` settings (``appendfsync always`` fsyncs the
AOF before replying; ``everysec`` may lose the last second). The test-suite server
runs with ``appendonly yes`` and ``appendfsync always``.

A single Redis (or a primary with replicas) only: transactions span several keys,
which Redis Cluster would refuse across hash slots.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge.profiles.model import (
    TALLY_FIELDS,
    Profile,
    Tally,
    TallyKey,
    decode,
    encode,
    segments_text,
)
from edge.profiles.outbox import (
    DEAD,
    DELIVERED,
    PENDING,
    STATES,
    OutboxRow,
    OutMessage,
    decode_message,
    encode_message,
)
from edge.profiles.store import (
    CLAIM_TTL,
    Mutation,
    Profiles,
    ReportRow,
    Store,
    bulk_deltas,
    decode_products,
    decode_snapshots,
    encode_products,
    encode_snapshot,
    expanded,
    measuring,
    outgoing,
)

MAX_ATTEMPTS: Final = 50
_LOCK_STRIPES: Final = 256
_POOL_SIZE: Final = 64

# Deletes a profile and the aliases that still point at it. A Lua script inside the
# MULTI, because "still points at it" must be judged after the earlier commands of the
# same transaction ran (a merge re-points the aliases, then deletes the old profile).
# KEYS[1] = p:{key}, KEYS[2] = ak:{key}; ARGV[1] = key, ARGV[2] = "{prefix}a:".
_DELETE_PROFILE: Final = """
for _, alias in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local link = ARGV[2] .. alias
    if redis.call('GET', link) == ARGV[1] then redis.call('DEL', link) end
end
return redis.call('DEL', KEYS[1], KEYS[2])
"""


# The outbox's scripts: each one atomic, so replicas claim, settle and draw coupons
# without stepping on each other. ARGV[1] is the key prefix where keys are built inside.
_ENQUEUE: Final = """
if redis.call('HSETNX', KEYS[1], 'msg', ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'next_at', ARGV[4],
  'error', '', 'created', ARGV[5], 'updated', ARGV[5], 'visitor', ARGV[6])
redis.call('ZADD', ARGV[1] .. 'mq', ARGV[4], ARGV[2])
redis.call('ZADD', ARGV[1] .. 'mst:pending', ARGV[5], ARGV[2])
redis.call('SADD', ARGV[1] .. 'mv:' .. ARGV[6], ARGV[2])
return 1
"""
_CLAIM: Final = """
local now, limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'mq', '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  local k = ARGV[1] .. 'm:' .. id
  redis.call('ZADD', ARGV[1] .. 'mq', now + lease, id)
  redis.call('HINCRBY', k, 'attempts', 1)
  redis.call('HSET', k, 'next_at', now + lease, 'updated', now)
  out[#out + 1] = redis.call('HGETALL', k)
end
return out
"""
_SETTLE: Final = """
local k = ARGV[1] .. 'm:' .. ARGV[2]
local old = redis.call('HGET', k, 'state')
if not old then return 0 end
if ARGV[7] == 'retry' then
  if old == 'delivered' then return 0 end
  redis.call('HSET', k, 'attempts', 0)
end
redis.call('HSET', k, 'state', ARGV[3], 'next_at', ARGV[4], 'error', ARGV[5], 'updated', ARGV[6])
if ARGV[3] == 'pending' then
  redis.call('ZADD', ARGV[1] .. 'mq', ARGV[4], ARGV[2])
else
  redis.call('ZREM', ARGV[1] .. 'mq', ARGV[2])
end
if old ~= ARGV[3] then
  redis.call('ZREM', ARGV[1] .. 'mst:' .. old, ARGV[2])
  redis.call('ZADD', ARGV[1] .. 'mst:' .. ARGV[3], redis.call('HGET', k, 'created'), ARGV[2])
end
return 1
"""
_DROP: Final = """
local function drop(prefix, id)
  local k = prefix .. 'm:' .. id
  local fields = redis.call('HMGET', k, 'state', 'visitor')
  if not fields[1] then return 0 end
  redis.call('ZREM', prefix .. 'mst:' .. fields[1], id)
  redis.call('ZREM', prefix .. 'mq', id)
  redis.call('SREM', prefix .. 'mv:' .. fields[2], id)
  return redis.call('DEL', k)
end
local n = 0
if ARGV[2] == 'visitor' then
  for _, id in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'mv:' .. ARGV[3])) do
    n = n + drop(ARGV[1], id)
  end
  redis.call('DEL', ARGV[1] .. 'mv:' .. ARGV[3])
else
  local before = tonumber(ARGV[4])
  for _, id in ipairs(redis.call('ZRANGE', ARGV[1] .. 'mst:' .. ARGV[3], 0, -1)) do
    local updated = tonumber(redis.call('HGET', ARGV[1] .. 'm:' .. id, 'updated') or '0')
    if updated < before then n = n + drop(ARGV[1], id) end
  end
end
return n
"""
_COUPON_LOAD: Final = """
local n = 0
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('SADD', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
"""
_COUPON_TAKE: Final = """
local code = redis.call('HGET', KEYS[1], ARGV[1])
if code then return code end
code = redis.call('SPOP', KEYS[2])
if not code then return false end
redis.call('HSET', KEYS[1], ARGV[1], code)
return code
"""


class TransactionConflict(RuntimeError):
    """Other writers kept changing the same profiles; nothing was written."""


class OutcomeUnknown(RuntimeError):
    """The connection broke while ``EXEC`` was in flight: the write may or may not have
    been applied, so it is not retried (a retry could count the events twice)."""


class RedisStore(Store):
    """*timeout*: seconds a connection may take to open and a reply to come (redis-py's
    ``socket_connect_timeout`` and ``socket_timeout``); None waits as long as the
    operating system does. :class:`~edge.profiles.store.GuardedStore` puts the shorter
    deadline of the page path around reads."""

    failures = (RedisError, OSError, OutcomeUnknown)

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "edge:",
        timeout: float | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._profile = f"{prefix}p:"
        self._alias = f"{prefix}a:"
        self._alias_set = f"{prefix}ak:"
        self._claim = f"{prefix}c:"
        # Blocking pool: a burst of loads waits for a free connection instead of
        # failing with "Too many connections".
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=_POOL_SIZE,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            timeout=20 if timeout is None else timeout,  # for a free connection of the pool
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        # Writers in this process to the same profile queue here rather than fight
        # through WATCH retries; only writers on other replicas can still conflict.
        self._stripes = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
        self._readers: list[AbstractConnection] = []
        self._reading = asyncio.Semaphore(_POOL_SIZE)
        self._closed = False

    # reads: one round trip each

    async def ping(self) -> None:
        await self._get(self.prefix + "ping")

    async def get(self, key: str) -> Profile | None:
        data = await self._get(self._profile + key)
        return None if data is None else decode(data)

    async def resolve(self, alias: str) -> str | None:
        key = await self._get(self._alias + alias)
        return None if key is None else key.decode()

    async def put_products(self, records: list[dict[str, Any]]) -> None:
        await self._redis.set(self.prefix + "products", encode_products(records))

    async def get_products(self) -> list[dict[str, Any]]:
        return decode_products(await self._get(self.prefix + "products"))

    async def put_segment_snapshot(self, day: str, snapshot: dict[str, Any]) -> None:
        await self._redis.hset(self.prefix + "snapshots", day, encode_snapshot(snapshot))

    async def get_segment_snapshots(self, since: str) -> list[dict[str, Any]]:
        kept = await self._redis.hgetall(self.prefix + "snapshots")
        rows = ((day.decode(), data) for day, data in kept.items())
        return decode_snapshots((day, data) for day, data in rows if day >= since)

    async def _get(self, name: str) -> bytes | None:
        """``GET`` on an idle connection of the store's own, not through the client.

        The request path's profile load is one ``GET``, and redis-py's client spends
        more on a command than the round trip costs: its pool, timeouts, retry and
        observability wrappers measured 130-235 µs per ``GET`` against 100 µs for
        ``send_command`` + ``read_response`` on a connection the pool made (uvloop,
        loopback, 1.5 KB value). The connections are the library's, so the parser
        (hiredis), protocol and authentication are too. A connection that fails or
        whose command is cancelled mid-flight is dropped, never reused; a read on a
        connection that had been idle is retried once on a new one (the server may
        have restarted since)."""
        async with self._reading:
            readers = self._readers
            reused = bool(readers)
            conn = readers.pop() if reused else self._pool.make_connection()
            try:
                try:
                    await conn.send_command("GET", name)
                    reply = await conn.read_response()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    if not reused:
                        raise
                    await conn.disconnect()
                    await conn.send_command("GET", name)  # reconnects
                    reply = await conn.read_response()
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            if self._closed:  # close() ran meanwhile: nobody else would disconnect it
                await conn.disconnect(nowait=True)
            else:
                readers.append(conn)
            return reply  # type: ignore[no-any-return]

    async def keys(self) -> list[str]:
        start = len(self._profile)
        pattern = _glob_escape(self._profile) + "*"
        return [
            name[start:].decode() async for name in self._redis.scan_iter(match=pattern, count=1000)
        ]

    # one-time names (signed ingest requests seen): ``o:{name}``, expiring by itself

    async def claim_once(self, name: str, ttl: int) -> bool:
        return bool(await self._redis.set(f"{self.prefix}o:{name}", 1, nx=True, ex=ttl))

    async def release_once(self, name: str) -> None:
        await self._redis.delete(f"{self.prefix}o:{name}")

    # the activation: the due index, the outbox, coupons (see the module docstring)

    async def due_keys(self, until: int, limit: int) -> list[str]:
        names = await self._redis.zrangebyscore(self.prefix + "due", 1, until, start=0, num=limit)
        return [name.decode() for name in names]

    async def outbox_claim(self, now: int, limit: int, lease: int) -> list[OutboxRow]:
        found = await self._redis.eval(_CLAIM, 0, self.prefix, now, limit, lease)  # type: ignore[misc]
        return [_outbox_row(fields) for fields in found]

    async def _settle(self, id: str, state: str, next_at: int, error: str, mode: str = "") -> int:
        now = int(time.time())
        args = (self.prefix, id, state, next_at, error, now, mode)
        return int(await self._redis.eval(_SETTLE, 0, *args))  # type: ignore[misc]

    async def outbox_done(self, id: str) -> None:
        await self._settle(id, DELIVERED, 0, "")

    async def outbox_failed(self, id: str, retry_at: int, error: str, dead: bool) -> None:
        await self._settle(id, DEAD if dead else PENDING, retry_at, error)

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRow]:
        rows: list[OutboxRow] = []
        for each in [state] if state else list(STATES):
            ids = await self._redis.zrange(f"{self.prefix}mst:{each}", 0, limit - 1)
            async with self._redis.pipeline(transaction=False) as pipe:
                for id in ids:
                    pipe.hgetall(f"{self.prefix}m:{id.decode()}")
                found = await pipe.execute()
            rows += [_outbox_row(fields) for fields in found if fields]
        return sorted(rows, key=lambda r: (r.created, r.message.id))[:limit]

    async def outbox_retry(self, ids: Sequence[str]) -> int:
        return sum([await self._settle(id, PENDING, 0, "", "retry") for id in ids])

    async def outbox_purge(self, state: str, before: int) -> int:
        return int(await self._redis.eval(_DROP, 0, self.prefix, "state", state, before))  # type: ignore[misc]

    async def outbox_forget(self, visitor: str) -> int:
        return int(await self._redis.eval(_DROP, 0, self.prefix, "visitor", visitor, 0))  # type: ignore[misc]

    async def coupon_load(self, pool: str, codes: Sequence[str]) -> int:
        added = 0
        codes = list(codes)
        for i in range(0, len(codes), 1000):
            part = codes[i : i + 1000]
            keys = (f"{self.prefix}ck:{pool}", f"{self.prefix}cf:{pool}")
            added += int(await self._redis.eval(_COUPON_LOAD, 2, *keys, *part))  # type: ignore[misc]
        return added

    async def coupon_take(self, pool: str, message_id: str) -> str | None:
        keys = (f"{self.prefix}cg:{pool}", f"{self.prefix}cf:{pool}")
        code = await self._redis.eval(_COUPON_TAKE, 2, *keys, message_id)  # type: ignore[misc]
        return None if code is None else code.decode()

    async def coupon_counts(self, pool: str) -> tuple[int, int]:
        left = await self._redis.scard(f"{self.prefix}cf:{pool}")
        given = await self._redis.hlen(f"{self.prefix}cg:{pool}")
        return int(left), int(given)

    # writes

    async def transact(
        self, keys: Sequence[str], claims: Iterable[str], mutation: Mutation
    ) -> Profiles:
        """Atomically, across replicas: load *keys*, find which *claims* were seen,
        apply *mutation*, store the result, record the new claims, link aliases.

        Returns after Redis acknowledged ``EXEC``; durable as far as the server's
        ``appendfsync`` makes it (see the module docstring). *mutation* may run more
        than once and always gets freshly decoded profiles. Keys it returns beyond
        *keys* are written but were not watched (the service never does that)."""
        keys = list(dict.fromkeys(keys))
        claims = list(dict.fromkeys(claims))
        stripes = sorted({zlib.crc32(k.encode()) % _LOCK_STRIPES for k in keys})
        for held, index in enumerate(stripes):  # sorted: no lock-order deadlock
            try:
                await self._stripes[index].acquire()
            except BaseException:
                for undo in stripes[:held]:
                    self._stripes[undo].release()
                raise
        try:
            return await self._transact(keys, claims, mutation)
        finally:
            for index in stripes:
                self._stripes[index].release()

    async def _transact(self, keys: list[str], claims: list[str], mutation: Mutation) -> Profiles:
        watched = [self._profile + k for k in keys] + [self._claim + c for c in claims]
        async with self._redis.pipeline(transaction=True) as pipe:
            for attempt in range(MAX_ATTEMPTS):
                committing = False
                try:
                    values: list[bytes | None] = []
                    if watched:
                        await pipe.watch(*watched)
                        values = await pipe.mget(watched)
                    current: Profiles = {
                        k: None if v is None else decode(v)
                        for k, v in zip(keys, values[: len(keys)], strict=True)
                    }
                    seen = {
                        c for c, v in zip(claims, values[len(keys) :], strict=True) if v is not None
                    }
                    deltas: dict[TallyKey, Tally] = {}
                    result = measuring(mutation, deltas)(current, seen)
                    pipe.multi()
                    self._queue_writes(pipe, result, [c for c in claims if c not in seen])
                    _queue_messages(pipe, self.prefix, outgoing(mutation))
                    if deltas:
                        _queue_tallies(pipe, self.prefix, deltas)
                    committing = True
                    await pipe.execute()
                    return result
                except WatchError as exc:
                    # redis-py reports a connection lost while watching as a WatchError
                    # too; during EXEC that leaves the outcome unknown.
                    if committing and isinstance(
                        exc.__context__, RedisConnectionError | RedisTimeoutError
                    ):
                        raise OutcomeUnknown(
                            f"connection to Redis lost during EXEC for {keys}"
                        ) from exc.__context__
                    await pipe.reset()
                    # Jitter so replicas that collided do not collide again in step.
                    await asyncio.sleep(random.uniform(0, 0.0005 * (attempt + 1)))
        raise TransactionConflict(
            f"profiles {keys} changed under {MAX_ATTEMPTS} attempts in a row; nothing was "
            "written (are many replicas writing the same visitor at once?)"
        )

    def _queue_writes(self, pipe: Pipeline, result: Profiles, new_claims: list[str]) -> None:
        due = self.prefix + "due"
        for key, profile in result.items():
            if profile is None:
                pipe.eval(
                    _DELETE_PROFILE,
                    2,
                    self._profile + key,
                    self._alias_set + key,
                    key,
                    self._alias,
                )
                pipe.zrem(due, key)
                continue
            pipe.set(self._profile + key, encode(profile))
            if profile.due:
                pipe.zadd(due, {key: profile.due})
            else:
                pipe.zrem(due, key)
            if profile.aliases:
                pipe.mset({self._alias + alias: key for alias in profile.aliases})
                pipe.sadd(self._alias_set + key, *profile.aliases)
        if new_claims:
            stamp = int(time.time())
            for claim in new_claims:
                pipe.set(self._claim + claim, stamp, ex=CLAIM_TTL)

    async def report_rows(self, since_day: int = 0) -> list[ReportRow]:
        days = sorted(
            int(d) for d in await self._redis.smembers(self.prefix + "tdays") if int(d) >= since_day
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(f"{self.prefix}t:{day}")
            hashes = await pipe.execute()
        rows: list[tuple[Any, ...]] = []
        for day, fields in zip(days, hashes, strict=True):
            rows += _rows(day, fields)
        return expanded(rows)

    def bulk(self) -> RedisBulkSession:
        """A synchronous connection of its own for a bulk writer (``edge import``)."""
        return RedisBulkSession(self)

    async def close(self) -> None:
        self._closed = True
        readers, self._readers = self._readers, []
        for conn in readers:
            await conn.disconnect()
        await self._redis.aclose()
        await self._pool.aclose()


_BULK_PART: Final = 1_000
"""Keys per ``MGET`` of a bulk session's reads."""


@dataclass
class RedisWrites:
    """A bulk transaction's writes, encoded (on the importer's thread, as
    :func:`edge.profiles.sqlite.prepare` does for SQLite)."""

    gone: list[str]
    kept: list[tuple[str, bytes, list[str], int]]
    """(key, the encoded profile, its aliases, its due time)."""
    claims: list[str]
    tallies: dict[TallyKey, Tally] = field(default_factory=dict)
    """Changes to the daily aggregates."""
    messages: list[OutMessage] = field(default_factory=list)
    """The outbox's new messages."""


class RedisBulkSession:
    """A bulk writer's session (``edge import``), with the interface of SQLite's
    :class:`~edge.profiles.sqlite.BulkSession`: reads by the thousand (``MGET``), then
    each :meth:`run` one ``MULTI``/``EXEC`` of the same writes :meth:`RedisStore.transact`
    makes (profiles, alias links and sets, claims with ``CLAIM_TTL``).

    Redis cannot tell whether someone wrote since the early reads (SQLite's
    ``data_version``), so :meth:`others_wrote` always says maybe: the importer reads
    again inside :meth:`run`, where every read also ``WATCH``es what it read, and
    ``EXEC`` fails if a sidecar wrote any of it meanwhile; :meth:`run` then runs the
    body again, up to ``MAX_ATTEMPTS`` times."""

    def __init__(self, store: RedisStore) -> None:
        self._keys = store
        """(Where the key prefixes are.)"""
        self._client = redis.Redis.from_url(store.url)
        self._pipe: Any = None
        """The watching pipeline while :meth:`run` runs its body."""
        self._queued: list[RedisWrites] = []

    def _mget(self, prefix: str, names: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        pipe = self._pipe
        for i in range(0, len(names), _BULK_PART):
            part = [prefix + name for name in names[i : i + _BULK_PART]]
            if pipe is not None:
                pipe.watch(*part)  # (immediate mode: the MGET below runs at once)
                values += pipe.mget(part)
            else:
                values += self._client.mget(part)
        return values

    def blobs(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored (encoded) profiles among *keys*."""
        values = self._mget(self._keys._profile, keys)
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    def aliases(self, aliases: Sequence[str]) -> dict[str, str]:
        """alias -> key for the *aliases* that point at a profile."""
        values = self._mget(self._keys._alias, aliases)
        return {a: v.decode() for a, v in zip(aliases, values, strict=True) if v is not None}

    def claims(self, claims: Sequence[str]) -> set[str]:
        """The *claims* already recorded."""
        values = self._mget(self._keys._claim, claims)
        return {c for c, v in zip(claims, values, strict=True) if v is not None}

    def others_wrote(self) -> bool:
        return True  # (not knowable: check what was read, see the class docstring)

    @staticmethod
    def prepare(
        result: Profiles,
        new_claims: Sequence[str],
        before: Mapping[str, bytes | None] = {},
        messages: Sequence[OutMessage] = (),
    ) -> RedisWrites:
        """*result* (None deletes) and *new_claims*, encoded; the daily aggregates'
        changes against *before* (key -> the profile as read, encoded)."""
        return RedisWrites(
            gone=[key for key, p in result.items() if p is None],
            kept=[(key, encode(p), p.aliases, p.due) for key, p in result.items() if p is not None],
            claims=list(new_claims),
            tallies=bulk_deltas(result, before),
            messages=list(messages),
        )

    def store(self, writes: RedisWrites) -> None:
        """Write *writes* with the transaction :meth:`run` is running."""
        if self._pipe is None:
            raise RuntimeError("RedisBulkSession.store outside run()")
        self._queued.append(writes)

    def write(
        self,
        result: Profiles,
        new_claims: Sequence[str],
        before: Mapping[str, bytes | None] = {},
        messages: Sequence[OutMessage] = (),
    ) -> None:
        self.store(self.prepare(result, new_claims, before, messages))

    def run(self, body: Callable[[], None]) -> None:
        """*body*'s reads (watched) and writes, the writes in one ``MULTI``/``EXEC``;
        again from the start if a watched key changed before ``EXEC``."""
        for attempt in range(MAX_ATTEMPTS):
            with self._client.pipeline(transaction=True) as pipe:
                self._pipe, self._queued = pipe, []
                try:
                    body()
                    pipe.multi()
                    for writes in self._queued:
                        self._queue(pipe, writes)
                    pipe.execute()
                    return
                except WatchError as exc:
                    # redis-py says WatchError for a connection lost while watching too:
                    # that is no conflict to retry (an import run again counts once).
                    if isinstance(exc.__context__, RedisConnectionError | RedisTimeoutError):
                        raise exc.__context__ from None
                    time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
                finally:
                    self._pipe, self._queued = None, []
        raise TransactionConflict(
            f"the import's profiles changed under {MAX_ATTEMPTS} attempts in a row; this "
            "chunk was not written (run the import again: what was written counts once)"
        )

    def _queue(self, pipe: Any, writes: RedisWrites) -> None:
        """The commands of :meth:`RedisStore._queue_writes`, from encoded profiles."""
        keys = self._keys
        due = keys.prefix + "due"
        for key in writes.gone:
            pipe.eval(
                _DELETE_PROFILE, 2, keys._profile + key, keys._alias_set + key, key, keys._alias
            )
            pipe.zrem(due, key)
        for key, data, aliases, when in writes.kept:
            pipe.set(keys._profile + key, data)
            if when:
                pipe.zadd(due, {key: when})
            else:
                pipe.zrem(due, key)
            if aliases:
                pipe.mset({keys._alias + alias: key for alias in aliases})
                pipe.sadd(keys._alias_set + key, *aliases)
        if writes.claims:
            stamp = int(time.time())
            for claim in writes.claims:
                pipe.set(keys._claim + claim, stamp, ex=CLAIM_TTL)
        if writes.tallies:
            _queue_tallies(pipe, keys.prefix, writes.tallies)
        _queue_messages(pipe, keys.prefix, writes.messages)

    def checkpoint(self) -> None:
        """(Nothing to do: SQLite's WAL copy has no Redis counterpart.)"""

    def close(self) -> None:
        self._client.close()


def _queue_messages(pipe: Any, prefix: str, messages: Sequence[OutMessage]) -> None:
    now = int(time.time())
    for m in messages:
        pipe.eval(
            _ENQUEUE,
            1,
            f"{prefix}m:{m.id}",
            prefix,
            m.id,
            encode_message(m),
            m.not_before,
            now,
            m.visitor,
        )


def _outbox_row(fields: Any) -> OutboxRow:
    """An outbox hash (a dict, or HGETALL's flat list from a script) as a row."""
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    got = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
    text = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in got.items() if k != "msg"}
    return OutboxRow(
        decode_message(got["msg"]),
        text["state"],
        attempts=int(text["attempts"]),
        next_at=int(text["next_at"]),
        error=text["error"],
        created=int(text["created"]),
        updated=int(text["updated"]),
    )


_SEP: Final = "\x1f"
_INTEGRAL: Final = frozenset({0, 1, 2, 5, 6})
"""Which of ``TALLY_FIELDS`` are whole numbers (``HINCRBY``; the others by float)."""


def _queue_tallies(pipe: Any, prefix: str, deltas: dict[TallyKey, Tally]) -> None:
    days: set[int] = set()
    for (day, placement, arm, segments), row in deltas.items():
        name = f"{prefix}t:{day}"
        tail = f"{_SEP}{segments_text(segments)}" if segments else ""
        for n, value in enumerate(row):
            if not value:
                continue
            member = f"{placement}{_SEP}{arm}{_SEP}{n}{tail}"
            if n in _INTEGRAL:
                pipe.hincrby(name, member, int(value))
            else:
                pipe.hincrbyfloat(name, member, float(value))
            days.add(day)
    if days:
        pipe.sadd(prefix + "tdays", *days)


def _rows(day: int, fields: dict[bytes, bytes]) -> list[tuple[Any, ...]]:
    """The stored rows of a day's hash (see :func:`edge.profiles.store.expanded`)."""
    found: dict[tuple[str, str, str], list[float]] = {}
    for name, value in fields.items():
        placement, arm, n, *segments = name.decode().split(_SEP)
        key = (placement, arm, segments[0] if segments else "")
        row = found.setdefault(key, [0, 0, 0, 0.0, 0.0, 0, 0])
        i = int(n)
        row[i] = int(value) if i in _INTEGRAL else float(value)
    assert len(TALLY_FIELDS) == 7
    return [(day, p, a, *row, s) for (p, a, s), row in found.items()]


def _glob_escape(text: str) -> str:
    """*text* matched literally in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
