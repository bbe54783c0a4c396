"""The activation's commands: ``edge outbox``, ``edge export``, ``edge coupons``.

``edge outbox list|retry|purge`` looks after the webhooks waiting, delivered or dead;
``edge export SEGMENT`` writes the segment's members (CSV or JSON Lines) for a CRM or
an e-mail tool, read-only; ``edge coupons load POOL FILE`` adds the merchant's coupon
codes to a pool the scenarios draw from.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import difflib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

from edge.config import Config, ConfigError, duration_seconds, load_config
from edge.profiles.model import Profile
from edge.profiles.outbox import COUPON_CODE, DEAD, DELIVERED, PENDING, STATES, OutboxRow
from edge.profiles.store import Store
from edge.rules import RequestInfo, RuleSet, ShopStats, load_rules
from edge.store_cli import add_store_flags, check_store

COMMANDS = ("outbox", "export", "coupons")
T = TypeVar("T")


def add_commands(commands: Any) -> None:
    """Declare the commands on the ``edge`` command's subparsers."""
    outbox = commands.add_parser(
        "outbox",
        help="the webhooks waiting, delivered or dead: list, retry, purge",
        description="Look after the outbox the activation delivers from.",
    )
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="list messages (no payloads: personal data)")
    listing.add_argument("--state", choices=STATES, help="only messages in this state")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    add_store_flags(listing)
    retry = actions.add_parser("retry", help="send dead (or waiting) messages again now")
    retry.add_argument("ids", nargs="*", metavar="ID", help="message ids (from edge outbox list)")
    retry.add_argument("--dead", action="store_true", help="every dead message")
    add_store_flags(retry)
    purge = actions.add_parser("purge", help="delete delivered or dead messages")
    purge.add_argument("--state", choices=(DELIVERED, DEAD), required=True)
    purge.add_argument(
        "--older-than",
        metavar="DURATION",
        help="only those last changed longer ago than this (7d, 12h; default: all)",
    )
    add_store_flags(purge)

    export = commands.add_parser(
        "export",
        help="write a segment's members (CSV or JSON Lines) for a CRM or e-mail tool",
        description="Evaluate SEGMENT on every stored profile (read-only: the store is not "
        "changed, nor made) and write its members: profile key, customer id, e-mail hash, "
        "and the traits export_traits allows. Only profiles with marketing consent.",
    )
    export.add_argument("segment", metavar="SEGMENT", help="a segment name of the rule files")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--output", metavar="FILE", help="write there (default: stdout)")
    export.add_argument("--rules", metavar="DIR", help="rule files (default ./rules)")
    add_store_flags(export)

    coupons = commands.add_parser(
        "coupons",
        help="load the shop's coupon codes into a pool the scenarios draw from",
        description="Coupon pools: each code is given to one message only, ever.",
    )
    coupon_actions = coupons.add_subparsers(dest="action", metavar="ACTION")
    coupon_actions.required = True
    load = coupon_actions.add_parser("load", help="add the codes of FILE (one a line) to POOL")
    load.add_argument("pool", metavar="POOL")
    load.add_argument("file", metavar="FILE")
    add_store_flags(load)


def run(args: argparse.Namespace) -> int:
    config = load_config({"store": args.store}, config_file=args.config)
    if config.store == "memory":
        raise ConfigError(
            f"store: edge {args.command} needs the sidecar's store (sqlite:PATH or "
            "redis://...), not memory; set --store/EDGE_STORE"
        )
    if args.command == "export":
        return _export(args, config)
    if args.command == "coupons":
        codes = _read_codes(Path(args.file))
        check_store(config.store, create=True)  # (codes may come before any visitor)
        added, left, given = _with_store(config, _load(args.pool, codes))
        print(
            f"{added} codes added to pool {args.pool} ({len(codes) - added} known already); "
            f"{left} left, {given} given"
        )
        return 0
    check_store(config.store)
    if args.action == "list":
        rows = _with_store(config, _list(args.state or "", args.limit))
        _print_rows(rows, as_json=args.json)
        return 0
    if args.action == "retry":
        if not args.ids and not args.dead:
            raise ConfigError("edge outbox retry: give message ids, or --dead for every dead one")
        count = _with_store(config, _retry(list(args.ids), args.dead))
        print(f"{count} messages to be sent again")
        return 0 if count or not args.ids else 1
    before = 2**62  # (all of them)
    if args.older_than is not None:
        seconds = duration_seconds(args.older_than)
        if seconds is None:
            raise ConfigError(
                f"--older-than: expected a duration such as 7d, got {args.older_than!r}"
            )
        before = int(time.time() - seconds)
    count = _with_store(config, _purge(args.state, before))
    print(f"{count} {args.state} messages deleted")
    return 0


def _with_store(config: Config, job: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
    from edge.profiles.backends import open_store

    async def main() -> T:
        store = open_store(config.store)
        try:
            return await job(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _list(state: str, limit: int) -> Callable[[Store], Coroutine[Any, Any, list[OutboxRow]]]:
    async def job(store: Store) -> list[OutboxRow]:
        return await store.outbox_list(state, limit)

    return job


def _retry(ids: list[str], dead: bool) -> Callable[[Store], Coroutine[Any, Any, int]]:
    async def job(store: Store) -> int:
        if dead:
            ids.extend(r.message.id for r in await store.outbox_list(DEAD, 10**9))
        return await store.outbox_retry(ids)

    return job


def _purge(state: str, before: int) -> Callable[[Store], Coroutine[Any, Any, int]]:
    async def job(store: Store) -> int:
        return await store.outbox_purge(state, before)

    return job


def _load(
    pool: str, codes: list[str]
) -> Callable[[Store], Coroutine[Any, Any, tuple[int, int, int]]]:
    async def job(store: Store) -> tuple[int, int, int]:
        added = await store.coupon_load(pool, codes)
        left, given = await store.coupon_counts(pool)
        return added, left, given

    return job


def _when(ts: int) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_rows(rows: list[OutboxRow], *, as_json: bool) -> None:
    if as_json:
        for r in rows:
            record = {
                "id": r.message.id,
                "destination": r.message.destination,
                "state": r.state,
                "attempts": r.attempts,
                "next_at": r.next_at if r.state == PENDING else None,
                "error": r.error,
                "created": r.created,
                "updated": r.updated,
            }
            print(json.dumps(record))
        return
    if not rows:
        print("no messages")
        return
    width = max(len(r.message.id) for r in rows)
    print(f"{'id':<{width}}  {'destination':<12} {'state':<9} tries  {'next try (UTC)':<19}  error")
    for r in rows:
        next_try = _when(r.next_at) if r.state == PENDING else "-"
        print(
            f"{r.message.id:<{width}}  {r.message.destination:<12} {r.state:<9} "
            f"{r.attempts:>5}  {next_try:<19}  {r.error}"
        )


def _read_codes(path: Path) -> list[str]:
    """The codes of *path*, one a line (blank lines and ``#`` comments skipped); a bad
    one is an error naming its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (one coupon code a line)") from None
    codes = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.strip()
        if not code or code.startswith("#"):
            continue
        if not COUPON_CODE.fullmatch(code):
            raise ConfigError(
                f"{path}:{number}:1: {code[:40]!r} is not a coupon code: letters, digits, "
                "and - _ . after the first character, 64 at most"
            )
        codes.append(code)
    if not codes:
        raise ConfigError(f"{path}: no coupon codes (one a line)")
    return codes


# --- export --------------------------------------------------------------------------


def _export(args: argparse.Namespace, config: Config) -> int:
    from edge.rules_cli import rules_dir_for

    ruleset, errors = load_rules(rules_dir_for(args.rules, config))
    if ruleset is None:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    if args.segment not in ruleset.segments:
        close = difflib.get_close_matches(args.segment, ruleset.segment_names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(ruleset.segment_names)
        raise ConfigError(f"edge export: no segment {args.segment!r}{hint} (segments: {known})")
    check_store(config.store)  # read-only: the store must be there already
    columns = ["key", "customer_id", "email_hash", *config.export_traits]
    out: TextIO = (
        open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
        if args.output
        else sys.stdout
    )
    try:
        count = asyncio.run(
            _write_members(config, ruleset, args.segment, columns, out, args.format)
        )
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{count} profiles in {args.segment}", file=sys.stderr)
    return 0


async def _profiles(config: Config) -> AsyncIterator[tuple[str, Profile]]:
    """Every stored (key, profile), read-only."""
    if config.store.startswith("sqlite:"):
        from edge.profiles.sqlite import read_profiles
        from edge.store_cli import SQLITE_DEFAULT

        for i, pair in enumerate(
            read_profiles(config.store.removeprefix("sqlite:") or SQLITE_DEFAULT)
        ):
            yield pair
            if i % 500 == 499:
                await asyncio.sleep(0)
        return
    from edge.profiles.backends import open_store

    store = open_store(config.store)
    try:
        for key in await store.keys():
            profile = await store.get(key)
            if profile is not None:
                yield key, profile
    finally:
        await store.close()


async def _write_members(
    config: Config, ruleset: RuleSet, segment: str, columns: list[str], out: TextIO, form: str
) -> int:
    now = time.time()
    if config.avg_order_value is not None:
        shop = ShopStats(avg_order_value=config.avg_order_value)
    else:
        spent, orders = 0.0, 0
        async for _, profile in _profiles(config):
            spent += profile.lifetime_spent
            orders += profile.order_count
        shop = ShopStats(avg_order_value=round(spent / orders, 2) if orders else None)
    request = RequestInfo()
    writer = csv.writer(out) if form == "csv" else None
    if writer is not None:
        writer.writerow(columns)
    count = 0
    async for key, profile in _profiles(config):
        if not profile.consent:
            continue
        if segment not in ruleset.names(
            ruleset.evaluate(ruleset.context(profile, request, now, shop))
        ):
            continue
        record = export_record(key, profile, config.export_traits)
        if writer is not None:
            writer.writerow(["" if record[c] is None else record[c] for c in columns])
        else:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def export_record(key: str, profile: Profile, traits: list[str]) -> dict[str, Any]:
    """The exported fields of *profile*: its key, customer id, e-mail hash, and only
    the *traits* the configuration allows (``export_traits``)."""
    record: dict[str, Any] = {
        "key": key,
        "customer_id": profile.customer_id,
        "email_hash": profile.email_hash,
    }
    for name in traits:
        if name.startswith("custom."):
            record[name] = profile.traits.custom.get(name.removeprefix("custom."))
        else:
            record[name] = getattr(profile.traits, name)
    return record
