"""The ``edge`` command: ``edge serve`` in front of a shop, ``edge demo`` to try it."""

from __future__ import annotations

import argparse
import gc
import logging
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge import __version__, activation_cli, map_cli
from edge.config import Config, ConfigError, load_config
from edge.store_cli import add_config_flag, add_store_flags, check_store, remove_if_empty
from edge.store_cli import redis_problem as _redis_problem

if TYPE_CHECKING:
    _Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers returns


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="shop-edge: an on-site personalization sidecar for online shops.",
    )
    parser.add_argument("--version", action="version", version=f"shop-edge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    # In the order `edge --help` lists them.
    _add_serve_command(commands)
    _add_rule_commands(commands)
    map_cli.add_command(commands)
    _add_demo_command(commands)
    _add_profile_commands(commands)
    _add_preview_command(commands)
    _add_report_command(commands)
    activation_cli.add_commands(commands)
    return parser


def _add_report_command(commands: _Commands) -> None:
    report = commands.add_parser(
        "report",
        help="what each placement earns: arms, conversions, lift against the holdout",
        description="Read the store's daily aggregates (read-only) and print, per placement "
        "and arm, visitors, conversions, revenue per visitor and the lift against the "
        "holdout with its 95% interval, with the sample-ratio check.",
    )
    report.add_argument(
        "--since",
        metavar="DATE",
        help="units first exposed on or after DATE (default: 30 days ago)",
    )
    report.add_argument("--placement", metavar="ID", help="one placement only")
    report.add_argument(
        "--segment",
        metavar="NAME",
        help="the placements' arms among the visitors who were in this segment at their "
        "first exposure (report_segments)",
    )
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the report as JSON")
    form.add_argument(
        "--csv", action="store_true", help="one CSV row per placement, segment and arm"
    )
    report.add_argument("--rules", metavar="DIR", help="rule files (default ./rules)")
    add_store_flags(report)


def _add_serve_command(commands: _Commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the sidecar in front of a shop",
        description="Run the sidecar as a reverse proxy in front of the shop at --upstream. "
        "Settings come from edge.toml, then EDGE_* environment variables, then these flags.",
    )
    serve.add_argument(
        "--upstream", metavar="URL", help="the shop's URL, e.g. http://127.0.0.1:8080"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--rules", metavar="DIR", help="rule files (default ./rules)")
    serve.add_argument("--snippets", metavar="DIR", help="snippet templates (default ./snippets)")
    add_config_flag(serve)


def _add_rule_commands(commands: _Commands) -> None:
    """The merchant's rule tools (``edge/rules_cli.py``)."""
    check = commands.add_parser(
        "check",
        help="validate the rule files: every error with file, line and column",
        description="Check every rule file in DIR (default ./rules): names, types, "
        "references, slots' selectors and the snippets placements show. Exits 1 on any "
        "error, printing all of them; prints a summary when clean.",
    )
    check.add_argument("directory", nargs="?", metavar="DIR", help="rule directory")
    check.add_argument("--rules", metavar="DIR", help="same as DIR")
    check.add_argument("--snippets", metavar="DIR", help="snippet templates (default ./snippets)")
    add_config_flag(check)

    explain = commands.add_parser(
        "explain",
        help="why a visitor is or is not in each segment",
        description="Every segment with true/false for a stored visitor (or a profile "
        "file), and the values of the sub-expressions that decided it.",
    )
    explain.add_argument(
        "visitor", nargs="?", metavar="VISITOR_ID", help="visitor id or cust:CUSTOMER_ID"
    )
    explain.add_argument("--profile", metavar="FILE", help="a profile as JSON (GET /_edge/profile)")
    explain.add_argument("--url", help="request context, e.g. '/?utm_medium=email'")
    explain.add_argument("--user-agent", default="", help="request context: the device")
    explain.add_argument("--rules", metavar="DIR", help="rule files (default ./rules)")
    add_store_flags(explain)

    segs = commands.add_parser(
        "segments",
        help="how many stored profiles are in each segment",
        description="Evaluate every segment on every stored profile: members per segment, "
        "and the segments nobody or everybody is in.",
    )
    segs.add_argument("--rules", metavar="DIR", help="rule files (default ./rules)")
    segs.add_argument("--store", help="profile store (default: from edge.toml / EDGE_STORE)")
    segs.add_argument(
        "--snapshot",
        action="store_true",
        help="also keep the counts as today's snapshot (the admin page's segment sizes)",
    )
    add_config_flag(segs)


def _add_demo_command(commands: _Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the bundled demo shop with the sidecar in front of it",
        description="Start the demo shop and the sidecar in front of it, in one process.",
    )
    demo.add_argument("--port", type=int, default=8000, help="port of the sidecar (default 8000)")
    demo.add_argument(
        "--snippets", default="snippets", help="snippet templates (default ./snippets)"
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )


def _add_profile_commands(commands: _Commands) -> None:
    """What the store holds: erasing a profile, importing the shop's data."""
    forget = commands.add_parser(
        "forget",
        help="erase a visitor's profile by visitor id, customer id or email",
        description="Erase a profile (and the links to it) from the configured store: "
        "by visitor id, by customer id as cust:ID, or by email.",
    )
    forget.add_argument("who", metavar="ID|EMAIL", help="visitor id, cust:CUSTOMER_ID or an email")
    forget.add_argument(
        "--store", help="store to erase from (default: from edge.toml / EDGE_STORE)"
    )
    add_config_flag(forget)

    imp = commands.add_parser(
        "import",
        help="import orders, customers or email events from a CSV or JSON Lines file",
        description="Import the shop's orders, customers or email events (CSV with a header "
        "row, JSON Lines, or a JSON array). Every bad line is reported with its line number; "
        "the good lines are applied, or with --strict nothing is applied unless every line "
        "is good. Importing the same file twice changes nothing the second time.",
    )
    imp.add_argument("file", help="the file to import")
    imp.add_argument(
        "--kind",
        choices=("orders", "customers", "emails", "events"),
        help="what the file holds (default: from the file name, else from its columns)",
    )
    imp.add_argument("--strict", action="store_true", help="apply nothing if any line is bad")
    imp.add_argument(
        "--store",
        help="store to import into: sqlite:PATH or redis://HOST:PORT/DB "
        "(default: from edge.toml / EDGE_STORE)",
    )
    imp.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: only on a terminal)"
    )
    add_config_flag(imp)


def _add_preview_command(commands: _Commands) -> None:
    preview = commands.add_parser(
        "preview-link",
        help="print a signed, expiring link showing a page as chosen segments see it",
        description="Print a link that shows PATH as visitors in the given segments would "
        "see it (not tracked, with a small badge saying so), to check a placement before "
        "it goes live. Signed with the sidecar's secret; expires.",
    )
    preview.add_argument("path", help="the page, e.g. / or /c/scarpe-donna")
    preview.add_argument(
        "--segment",
        action="append",
        required=True,
        metavar="NAME",
        help="a segment the preview visitor is in (repeat for several)",
    )
    preview.add_argument("--ttl", default="1h", help="how long the link works (default 1h; max 7d)")
    preview.add_argument(
        "--base", help="the shop's public address (default: public_url, else host:port)"
    )
    preview.add_argument(
        "--host", help="where the sidecar listens, without public_url (as given to serve)"
    )
    preview.add_argument(
        "--port", type=int, help="the sidecar's port, without public_url (as given to serve)"
    )
    preview.add_argument(
        "--rules", metavar="DIR", help="rule files naming the segments (default ./rules)"
    )
    add_config_flag(preview)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "forget":
            return _forget(args)
        if args.command == "import":
            return _import(args)
        if args.command == "preview-link":
            return _preview_link(args)
        if args.command == "report":
            return _report(args)
        if args.command == "map":
            return map_cli.run(args)
        if args.command in activation_cli.COMMANDS:
            return activation_cli.run(args)
        if args.command in ("check", "explain", "segments"):
            return _rules_command(args)
    except ConfigError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edge: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        unreachable = _redis_problem(exc)
        if unreachable is None:
            raise
        print(f"edge: {unreachable}", file=sys.stderr)  # (Redis went away mid-command)
        return 2
    return 2  # pragma: no cover - argparse rejects unknown commands


def _serve(args: argparse.Namespace) -> int:
    from edge.app import create_app
    from edge.server import Limits, apply_limits, bind, configure_logging, make_server, run, serve

    def read_config() -> Config:
        config = load_config(
            {
                "upstream": args.upstream,
                "host": args.host,
                "port": args.port,
                "rules": args.rules,
                "snippets": args.snippets,
            },
            config_file=args.config,
        )
        if not config.upstream:
            raise ConfigError(
                'no upstream: pass --upstream URL, set EDGE_UPSTREAM, or put upstream = "..." in edge.toml'
            )
        return config

    config = read_config()
    configure_logging(config.log_level)
    sock = _bind_or_explain(bind, config.host, config.port)
    app = create_app(config)
    server = make_server(
        app,
        host=config.host,
        port=config.port,
        graceful_timeout=config.graceful_timeout,
        limits=Limits.of(config),
    )

    def started() -> None:
        # What start-up built (modules, rules, catalog) lives as long as the process:
        # frozen, a full collection skips it. After the 500-visitor mix, one full
        # collection took 37.8 ms CPU over 63.5k objects; 16.0 ms over 16.7k with
        # 49.3k frozen (bench/goals.py --goal G2 --trace). Frozen cycles are never
        # collected: a rule set a reload replaces stays (once per reload).
        gc.collect()
        gc.freeze()
        print(
            f"shop-edge {__version__}: http://{_display_host(config.host)}:{config.port} "
            f"-> {config.upstream}",
            file=sys.stderr,
            flush=True,
        )

    def reload() -> None:  # SIGHUP
        try:
            new = read_config()
        except ConfigError as exc:
            logging.getLogger("edge").error(
                "reload refused, still serving the previous configuration: %s", exc
            )
            return
        app.reload(new)
        apply_limits(server, Limits.of(new))
        server.config.timeout_graceful_shutdown = new.graceful_timeout

    run(serve([(server, sock)], on_started=started, reload=reload))
    return 0


def _demo_rules() -> object:
    """./rules when run from a checkout (edit them and watch the demo change), else
    the library shipped in the package."""
    from pathlib import Path

    from edge.rules import LIBRARY_DIR

    here = Path("rules")
    return here if (here / "placements.toml").is_file() else LIBRARY_DIR


DEMO_SECRET_ENV = "EDGE_DEMO_WEBHOOK_SECRET"
"""The demo's destinations' signing secret: a new one each run, in the demo's own
process environment (``edge serve`` reads secrets from there too)."""


def _demo_destinations(rules: object, port: int) -> dict[str, dict[str, object]]:
    """A destination for each webhook the demo's rule files name (the shipped library's
    ``esp`` and ``crm`` at least), all pointing at the demo's receiver on *port*."""
    import tomllib
    from pathlib import Path

    from edge.demo.activation import webhook_names

    documents = []
    for path in sorted(Path(str(rules)).glob("*.toml")):
        try:
            documents.append(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError):
            continue  # the rules' own loading says what is wrong with it
    names = webhook_names(documents) | {"esp", "crm"}
    return {
        name: {
            "url": f"http://127.0.0.1:{port}/hooks/{name}",
            "secret_env": DEMO_SECRET_ENV,
            "rate": 50,
        }
        for name in sorted(names)
    }


def _demo(args: argparse.Namespace) -> int:
    import os

    from starlette.applications import Starlette

    from edge.app import EdgeApp, create_app
    from edge.demo.activation import Receiver
    from edge.demo.catalog import write_feed
    from edge.demo.history import REPORT_SEGMENTS
    from edge.demo.seed import seed
    from edge.demo.shop import create_app as create_shop
    from edge.server import bind, configure_logging, make_server, run, serve

    configure_logging("warning")
    shop_sock = bind("127.0.0.1", 0)
    shop_port = shop_sock.getsockname()[1]
    hooks_sock = bind("127.0.0.1", 0)  # the demo's webhook receiver (internal)
    secret = os.environ[DEMO_SECRET_ENV] = secrets.token_urlsafe(32)
    data_dir = tempfile.mkdtemp(prefix="edge-demo-")
    rules = _demo_rules()
    config = load_config(
        {
            "upstream": f"http://127.0.0.1:{shop_port}",
            "host": args.host,
            "port": args.port,
            "store": f"sqlite:{data_dir}/profiles.db",
            "secret": secrets.token_urlsafe(32),
            "admin_token": secrets.token_urlsafe(18),  # (a new one each run: the banner says it)
            "catalog": str(write_feed(f"{data_dir}/catalog.csv")),
            "rules": str(rules),
            "snippets": args.snippets,
            "report_segments": list(REPORT_SEGMENTS),
            # It writes thousands of synthetic profiles as it starts: on a busy machine a
            # commit can wait longer than a serving sidecar's 2 s would let it.
            "store_write_timeout_ms": 15_000,
            "activation": True,
            "activation_interval": 10,
            "destinations": _demo_destinations(rules, hooks_sock.getsockname()[1]),
        },
        environ={},
    )
    edge_sock = _bind_or_explain(bind, config.host, config.port)
    shop = make_server(create_shop(), host="127.0.0.1", port=shop_port, graceful_timeout=5)
    app = create_app(config)
    receiver = Receiver(secret.encode())
    labels = _demo_activation(app, receiver)
    hooks = make_server(
        Starlette(routes=receiver.routes()),
        host="127.0.0.1",
        port=hooks_sock.getsockname()[1],
        graceful_timeout=5,
    )
    seeded: list[int] = []

    async def seed_customers(edge_app: EdgeApp) -> None:
        ruleset = edge_app.rules.ruleset
        # The synthetic past is written without the activation (as fast as before):
        # what the newcomer does is activated from the start.
        edge_app.profiles.activation = None
        try:
            seeded.append(
                await seed(edge_app.profiles, placements=ruleset.placements, ruleset=ruleset)
            )
        finally:
            edge_app.profiles.activation = labels

    app.startup_hooks.append(seed_customers)
    sidecar = make_server(app, host=config.host, port=config.port, graceful_timeout=5)
    url = f"http://{_display_host(config.host)}:{config.port}"
    from edge.identity import Identity
    from edge.preview import make_token, preview_link

    vip_link = preview_link(url, "/", make_token(Identity([config.secret]), ["vip"], 86_400))

    def started() -> None:
        print(
            f"""
  shop-edge demo — the demo shop "Bottega Aurora" behind the sidecar

  Open {url}/ in your browser.

  Try:
    {url}/                     the home page (hero and featured blocks are slots)
    {url}/c/scarpe-donna       a category page (its product list is a slot)
    {url}/cart                 add something from a product page first
    {url}/?utm_medium=email&utm_campaign=black-friday
                               arrive from a campaign: the hero changes, for the visit
    {url}/search?q=borsa       then the home page: your interests' shelves come first
    {vip_link}
                               the home page as a VIP sees it (a signed preview link)
    {url}/_edge/profile        what the sidecar knows about you
    {url}/_edge/readyz         is the shop reachable, are the rules fine?
    {url}/_edge/admin          the report: what the placements did (four weeks of
                               synthetic history); admin token: {config.admin_token}

  Watch a cart recovery: put something in the cart on the demo shop, then on
  {url}/_edge/admin#demo move the demo's clock +4 h: the reminder
  reaches the demo's webhook receiver, signed, and the page shows it.

  {seeded[0] if seeded else 0} synthetic customers with order histories are in the profile
  store, and you are recorded as you click around. Edit rules/*.toml or snippets/*.html
  while it runs: changes are live within a second (`edge check` says what is wrong).

  The shop itself listens on http://127.0.0.1:{shop_port} (internal).
  Press Ctrl-C to stop.
""",
            flush=True,
        )

    try:
        run(
            serve(
                [(shop, shop_sock), (hooks, hooks_sock), (sidecar, edge_sock)],
                on_started=started,
            )
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print("  demo stopped.", flush=True)
    return 0


def _demo_activation(app: Any, receiver: Any) -> Any:
    """The demo's fake clock in the activation's loops, the Activator and the profile
    writes; the scenarios' labels for the receiver; the admin page's demo section."""
    from edge.demo.activation import DemoActivation, DemoClock, Labels

    clock = DemoClock()
    loops = app.activation
    loops.clock = app.profiles.clock = app.respond.clock = clock
    activator = app.profiles.activation
    activator.clock = clock
    receiver.labels = app.profiles.activation = Labels(activator, app.rules)
    app.admin.demo = DemoActivation(clock, receiver, loops)
    return receiver.labels


def _forget(args: argparse.Namespace) -> int:
    import asyncio

    from edge.identity import Identity
    from edge.profiles.backends import open_store
    from edge.profiles.service import ProfileService

    config = load_config({"store": args.store}, config_file=args.config)
    if "@" in args.who and not config.secret:
        raise ConfigError(
            "erasing by email needs the secret the emails were hashed with (EDGE_SECRET)"
        )
    identity = Identity([config.secret or "unused"])

    check_store(config.store)

    async def erase() -> bool:
        store = open_store(config.store)
        try:
            return await ProfileService(store, identity.email_hash).erase(args.who)
        finally:
            await store.close()

    if asyncio.run(erase()):
        print(f"erased the profile of {args.who}")
        return 0
    print(f"no profile found for {args.who}", file=sys.stderr)
    return 1


def _report(args: argparse.Namespace) -> int:
    import asyncio
    import csv
    import datetime as dt
    import json
    import time

    from edge import report
    from edge.rules import load_rules
    from edge.rules_cli import rules_dir_for

    config = load_config({"store": args.store}, config_file=args.config)
    today = dt.datetime.now(dt.UTC).date()
    since = today - dt.timedelta(days=30)
    if args.since:
        try:
            since = dt.date.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(
                f"--since: expected a date like {today.isoformat()}, got {args.since!r}"
            ) from None
    if config.store == "memory":
        raise ConfigError("store: edge report reads a SQLite file or Redis, not memory")
    ruleset, errors = load_rules(rules_dir_for(args.rules, config))
    if ruleset is None:
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    check_store(config.store)  # (never makes one)
    since_day = report.day_number(since)
    rows = asyncio.run(_report_rows(config.store, since_day))
    if args.placement and args.placement not in {p.id for p in ruleset.placements} | {
        r.placement for r in rows
    }:
        raise ConfigError(f"--placement: no placement {args.placement!r} in the rules or the store")
    if args.segment and args.segment not in {*ruleset.segment_names, *(r.segment for r in rows)}:
        raise ConfigError(
            f"--segment: no segment {args.segment!r} in the rules or the report; the "
            "report breaks placements down by report_segments (edge.toml)"
        )
    built = report.build(
        rows,
        ruleset.placements,
        since_day=since_day,
        window_seconds=config.attribution_seconds,
        now=time.time(),
        only=args.placement,
        segment=args.segment or None,
        segment_order=ruleset.segment_names,
    )
    if args.json:
        print(json.dumps(built, indent=1))
    elif args.csv:
        csv.writer(sys.stdout, lineterminator="\n").writerows(report.csv_rows(built))
    else:
        print(report.table(built))
    return 0


async def _report_rows(spec: str, since_day: int) -> list:  # type: ignore[type-arg]
    if spec.startswith("sqlite:"):
        from edge.profiles.sqlite import read_report_rows
        from edge.store_cli import SQLITE_DEFAULT

        return read_report_rows(spec.removeprefix("sqlite:") or SQLITE_DEFAULT, since_day)
    from edge.profiles.backends import open_store

    store = open_store(spec)
    try:
        return await store.report_rows(since_day)
    finally:
        await store.close()


def _import(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from edge.identity import Identity
    from edge.importer import ImportFailed, import_file
    from edge.profiles.backends import open_store

    config = load_config({"store": args.store}, config_file=args.config)
    if config.store == "memory":
        raise ConfigError(
            "store: edge import writes to the sidecar's store, a SQLite file or Redis, not "
            "memory; set --store/EDGE_STORE to sqlite:PATH or redis://HOST:PORT/DB"
        )
    if not config.secret:
        raise ConfigError(
            "edge import needs the secret the sidecar hashes emails with (EDGE_SECRET or "
            "secret in edge.toml), so imported emails match the visitors' profiles"
        )
    identity = Identity([config.secret, *config.previous_secrets])
    path = Path(args.file)
    if not path.is_file():  # (before a store is opened, let alone made)
        print(f"edge import: {path}: no such file", file=sys.stderr)
        return 2
    made = check_store(config.store, create=True)
    from edge.profiles.events import set_attribution_window

    set_attribution_window(config.attribution_seconds)

    async def run() -> int:
        store = open_store(config.store)
        try:
            report = import_file(
                path,
                store=store,
                identity=identity,
                kind=args.kind,
                strict=args.strict,
                progress=False if args.no_progress else None,
                activation=_import_activation(config),
            )
        except ImportFailed as exc:
            print(f"edge import: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.close()
        print(report.format_report())
        return report.exit_code()

    try:
        return asyncio.run(run())
    finally:
        if made is not None:
            remove_if_empty(made)  # a failed first import leaves no empty store behind


def _import_activation(config: Config) -> Any:
    """With ``activation`` on, an import activates the profiles it writes as the sidecar
    does (segment changes, journeys, the due index; their messages enqueued)."""
    if not config.activation:
        return None
    from edge.activation.loop import activator_for
    from edge.rules import LiveRules, rules_directory

    return activator_for(
        LiveRules(*rules_directory(config.rules)),
        snippets=config.snippets,
        traits=config.export_traits,
    )


def _parse_duration(text: str, what: str) -> int:
    from edge.rules.lang import parse_duration

    seconds = parse_duration(text)
    if seconds is None:
        raise ConfigError(f"{what}: expected a duration like 90s, 30m, 24h or 7d, got {text!r}")
    return int(seconds)


def _rules_command(args: argparse.Namespace) -> int:
    from edge import rules_cli

    overrides: dict[str, object] = {"store": getattr(args, "store", None)}
    if getattr(args, "snippets", None):
        overrides["snippets"] = args.snippets
    config = load_config(overrides, config_file=args.config)
    directory = rules_cli.rules_dir_for(getattr(args, "directory", None) or args.rules, config)
    if args.command == "segments" or (args.command == "explain" and args.visitor):
        check_store(config.store)  # read-only: the store must be there already
    if args.command == "check":
        # edge.toml's [destinations] (none configured: not checked)
        return rules_cli.check(directory, config.snippets, list(config.destinations) or None)
    if args.command == "explain":
        if not (args.visitor or args.profile):
            raise ConfigError("edge explain: give a VISITOR_ID or --profile FILE")
        return rules_cli.explain(
            directory, config, args.visitor, args.profile, args.url, args.user_agent
        )
    return rules_cli.segments(directory, config, snapshot=args.snapshot)


def _preview_link(args: argparse.Namespace) -> int:
    from edge.identity import Identity
    from edge.preview import make_token, preview_link
    from edge.rules_cli import check_segment_names

    config = load_config(
        {"host": args.host, "port": args.port, "rules": args.rules}, config_file=args.config
    )
    if not config.secret:
        raise ConfigError(
            "a preview link is signed with the sidecar's secret: set EDGE_SECRET (or secret "
            "in edge.toml) to the value the running sidecar uses"
        )
    check_segment_names(args.segment, config)
    # The address visitors use (public_url); else where the sidecar listens, as the
    # configuration and these flags say (the same as `edge serve` reads them).
    base = args.base or config.public_url or f"http://{_display_host(config.host)}:{config.port}"
    ttl = _parse_duration(args.ttl, "--ttl")
    try:
        token = make_token(Identity([config.secret]), args.segment, ttl)
        print(preview_link(base, args.path, token))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def _bind_or_explain(bind: object, host: str, port: int) -> object:
    try:
        return bind(host, port)  # type: ignore[operator]
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port}: {exc.strerror} (try --port with another port)",
        ) from None


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
