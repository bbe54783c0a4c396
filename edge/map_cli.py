"""``edge map URL…``: fit the rule files to a live shop's theme, page by page.

Each URL is fetched (through the sidecar or straight from the shop) and read by
:func:`edge.fitting.fit_page`: the page type, the slots that match (and how many
elements), the list items with their ids and facts, the product facts, the cart forms,
and what is missing with a suggestion. Exit status: 0 every slot for every page
matched and nothing is missing, 1 something is missing, 2 a page could not be read
(connection refused, an HTTP error, not HTML) or the rule files have errors.

The pages are fetched with httpx (a dependency for this command: a one-shot client
with redirects, timeouts and charset decoding; the sidecar's own upstream client is
built for proxying, not for this). The requests say they come from a bot, so a
sidecar in front of the shop serves them the original page and records nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urljoin, urlsplit

from edge import __version__
from edge.config import ConfigError, load_config

if TYPE_CHECKING:
    from edge.fitting import PageFit, SlotFit
    from edge.personalize.catalog import Catalog
    from edge.rules import RuleSet

USER_AGENT: Final = f"shop-edge-map/{__version__} (theme fitting bot)"
"""A crawler's name: a sidecar serves it the shop's own page and records nothing."""
MAX_BYTES: Final = 16 << 20
ITEMS_LISTED: Final = 8
"""Items printed per list; ``--json`` has them all."""
OK, MISSING, ERROR = 0, 1, 2


def add_command(commands: Any) -> None:
    """Declare ``edge map`` on the ``edge`` command's subparsers."""
    cmd = commands.add_parser(
        "map",
        help="fit the theme: what the sidecar sees on live pages, and what is missing",
        description="Fetch each URL (the shop, or the sidecar in front of it) and print its "
        "page type, the slots that match and how many elements, the list items with their "
        "ids and facts, the product facts, the cart forms and whether a cart action "
        "recognises them, and what is missing with a suggestion. Exits 0 when every slot "
        "of every page matched, 1 when something is missing, 2 when a page cannot be read.",
    )
    cmd.add_argument(
        "urls", nargs="+", metavar="URL", help="pages to read; a path is joined to --base"
    )
    cmd.add_argument("--rules", metavar="DIR", help="rule files (default ./rules)")
    cmd.add_argument(
        "--base", metavar="URL", help="for URLs given as paths (default: upstream in edge.toml)"
    )
    cmd.add_argument("--catalog", metavar="FILE", help="product feed (default: from edge.toml)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.add_argument("--timeout", type=float, default=10.0, help="seconds per page (default 10)")
    cmd.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: ./edge.toml when present)"
    )


def run(args: argparse.Namespace) -> int:
    """``edge map``: fetch, fit and print every URL; the exit status."""
    from edge.observe import DEFAULT_CART_ACTIONS, CartAction
    from edge.rules import load_rules
    from edge.rules_cli import rules_dir_for

    config = load_config({}, config_file=args.config)
    directory = rules_dir_for(args.rules, config)
    ruleset, errors = load_rules(directory)
    if ruleset is None:
        for error in errors:
            print(error, file=sys.stderr)
        print(f"edge map: fix the rule files first (edge check {directory})", file=sys.stderr)
        return ERROR
    catalog = _catalog(args.catalog or config.catalog)
    actions = (
        tuple(
            CartAction(a.method.upper(), a.path, a.action, a.product_field, a.quantity_field)
            for a in config.cart_actions
        )
        or DEFAULT_CART_ACTIONS
    )
    base = args.base or config.public_url or config.upstream
    pages = [
        _read(_absolute(url, base), ruleset, catalog, actions, args.timeout) for url in args.urls
    ]
    if args.json:
        shown = [
            {
                **page,
                "complete": bool(page["fit"] and page["fit"].complete),
                "fit": page["fit"] and dataclasses.asdict(page["fit"]),
            }
            for page in pages
        ]
        print(json.dumps({"pages": shown}, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(_report(page) for page in pages))
    if any(page["error"] for page in pages):
        return ERROR
    return MISSING if any(page["fit"].missing for page in pages) else OK


def _catalog(path: str) -> Catalog | None:
    if not path:
        return None
    from edge.personalize.catalog import Catalog, CatalogError

    try:
        return Catalog.load(Path(path))
    except CatalogError as exc:
        raise ConfigError(f"catalog: {exc}") from None


def _absolute(url: str, base: str) -> str:
    if urlsplit(url).scheme in ("http", "https"):
        return url
    if not base:
        raise ConfigError(
            f"{url}: not a full URL (http://…); give --base URL or set upstream in edge.toml"
        )
    return urljoin(base.rstrip("/") + "/", url.lstrip("/"))


def _read(
    url: str, ruleset: RuleSet, catalog: Catalog | None, actions: Any, timeout: float
) -> dict[str, Any]:
    """One page fetched and fitted: its final URL, status, redirects, the error that
    stopped it or its :class:`~edge.fitting.PageFit` (what ``--json`` prints)."""
    from edge.fitting import fit_page

    page: dict[str, Any] = {"url": url, "status": 0, "redirects": [], "error": "", "fit": None}
    fetched = _fetch(url, timeout, page)
    if fetched is None:
        return page
    final_url, html = fetched
    path = urlsplit(final_url).path or "/"
    page["fit"] = fit_page(path, html, ruleset, catalog=catalog, cart_actions=actions)
    return page


def _fetch(url: str, timeout: float, page: dict[str, Any]) -> tuple[str, str] | None:
    """The final URL and the HTML, or None with ``page["error"]`` saying why."""
    import httpx

    headers = {"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.5"}
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout, headers=headers) as client,
            client.stream("GET", url) as response,
        ):
            page["redirects"] = [
                {"status": r.status_code, "from": str(r.url), "to": r.headers.get("location", "")}
                for r in response.history
            ]
            page["status"] = response.status_code
            page["url"] = str(response.url)
            if response.status_code >= 400:
                page["error"] = f"HTTP {response.status_code} {response.reason_phrase}"
                return None
            kind = response.headers.get("content-type", "")
            if "html" not in kind.lower():
                page["error"] = f"not HTML ({kind or 'no Content-Type'})"
                return None
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    page["error"] = f"larger than {MAX_BYTES >> 20} MB"
                    return None
            encoding = response.charset_encoding or "utf-8"
            return str(response.url), bytes(body).decode(encoding, "replace")
    except httpx.ConnectError as exc:
        page["error"] = _connect_error(url, exc)
    except httpx.TimeoutException:
        page["error"] = f"no answer within {timeout:g}s (--timeout)"
    except httpx.TooManyRedirects:
        page["error"] = "too many redirects (a redirect loop?)"
    except (httpx.HTTPError, httpx.InvalidURL, LookupError) as exc:
        page["error"] = f"cannot read: {exc}"
    return None


def _connect_error(url: str, exc: Exception) -> str:
    where = urlsplit(url).netloc
    text = str(exc).lower()
    if "refused" in text:
        return f"connection refused by {where}: is the shop (or the sidecar) running there?"
    if "name or service" in text or "nodename" in text or "resolution" in text:
        return f"unknown host {urlsplit(url).hostname}"
    return f"cannot connect to {where}: {exc}"


# --- the readable report --------------------------------------------------------------------


def _report(page: dict[str, Any]) -> str:
    lines = [page["url"]]
    for hop in page["redirects"]:
        lines.append(f"  redirected  {hop['status']} {hop['from']} -> {hop['to']}")
    if page["error"]:
        lines.append(f"  error       {page['error']}")
        return "\n".join(lines)
    fit = page["fit"]
    params = ", ".join(f"{k}={v}" for k, v in fit.params.items())
    kind = fit.page_type or "(none)"
    lines.append(f"  page type   {kind}{f'  ({params})' if params else ''}")
    lines += _slot_lines(fit)
    for slot in fit.slots:
        if slot.on_page and slot.is_list and slot.items:
            lines += _item_lines(slot)
    if fit.page_type == "product":
        lines += _product_lines(fit)
    if fit.cart_forms:
        lines.append("  cart forms")
        for form in fit.cart_forms:
            shown = " ".join(f"{k}={v}" if v else k for k, v in form.fields.items())
            verdict = f"-> {form.recognised}" if form.recognised else "-> not recognised"
            times = f"  (x{form.count})" if form.count > 1 else ""
            lines.append(f"    {form.method} {form.action}  {shown}  {verdict}{times}")
    if fit.missing:
        lines.append(f"  missing ({len(fit.missing)})")
        for missing in fit.missing:
            lines.append(f"    - {missing.what}")
            lines.append("      try: " + missing.suggestion.replace("\n", "\n           "))
    else:
        lines.append("  missing     nothing: every slot for this page matched")
    return "\n".join(lines)


def _slot_lines(fit: PageFit) -> list[str]:
    if not fit.slots:
        return ["  slots       none in the rule files ([slots.NAME])"]
    lines = ["  slots"]
    shown = [s for s in fit.slots if s.on_page]
    width = max((len(s.name) for s in shown), default=0)
    select_width = min(40, max((len(s.select) for s in shown), default=0))
    for slot in shown:
        mark = "ok" if slot.elements and not slot.error else "!!"
        count = f"{slot.elements} element{'s' * (slot.elements != 1)}"
        if slot.is_list:
            count += f", {slot.item_count} item{'s' * (slot.item_count != 1)}"
        lines.append(f"    {mark}  {slot.name:<{width}}  {slot.select:<{select_width}}  {count}")
    others = [s.name for s in fit.slots if not s.on_page]
    if others:
        kind = f"{fit.page_type} pages" if fit.page_type else "pages of no type"
        lines.append(f"    -   not for {kind}: {', '.join(others)}")
    return lines


def _item_lines(slot: SlotFit) -> list[str]:
    lines = [f"  items of {slot.name} ({slot.item_count}; ids from {slot.reader})"]
    rows = []
    for item in slot.items[:ITEMS_LISTED]:
        facts = [item.category, item.brand, f"{item.price:.2f}" if item.price is not None else ""]
        rows.append((item.id or "(no id)", item.name, " · ".join(f for f in facts if f), item.link))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("    " + "  ".join([*cells, row[3]])).rstrip())
    if slot.item_count > ITEMS_LISTED:
        lines.append(f"    … and {slot.item_count - ITEMS_LISTED} more (--json lists them all)")
    return lines


def _product_lines(fit: PageFit) -> list[str]:
    product = fit.product
    if product is None:
        return ["  product     no facts found"]
    facts = [
        ("id", product.id),
        ("name", product.name),
        ("price", f"{product.price:.2f}" if product.price is not None else ""),
        ("currency", product.currency),
        ("brand", product.brand),
        ("category", product.category),
        ("availability", product.availability),
    ]
    shown = ", ".join(f"{k} {v}" for k, v in facts if v)
    return [f"  product     from {product.source}: {shown or 'nothing'}"]
