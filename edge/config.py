"""The operator's configuration: one declared type, read from edge.toml, EDGE_* and flags.

Precedence, lowest first: the defaults below, the TOML file (``edge.toml`` in the
working directory, or ``--config FILE`` / ``EDGE_CONFIG``), ``EDGE_<FIELD>``
environment variables, command-line flags. Every key is checked against the declared
type, so a misspelt key or a wrong type is an error naming the key and the source.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

DEFAULT_CONFIG_FILE = "edge.toml"
STORE_SCHEMES = ("sqlite:", "redis://", "rediss://", "unix://")
"""What a ``store`` setting starts with (or it is ``memory``): edge/profiles/backends.py."""
_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
"""A segment name the report can keep (the rules' names, up to the 48 characters an
arm record keeps: ``edge.profiles.model.MAX_ID``)."""
MAX_ARM_SEGMENTS = 8
"""Segments a placement's report breaks it down by (``edge.profiles.model``'s)."""
MAX_ID = 48
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,128}")
MOVED: dict[str, str] = {
    "page_types": "page types moved to the rule files: write them as [page_types] in "
    'rules/theme.toml (the same patterns; see rules/README.md, "Page types")',
    "cart_actions": "cart actions moved to the rule files: write each as [[cart_actions]] "
    "in rules/theme.toml, with action, path and product (see rules/README.md, "
    '"Carts and orders")',
}
"""Keys that edge.toml no longer has, and where what they said is written now."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def duration_seconds(text: str) -> float | None:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` as seconds (more than 0); None if not one."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match or float(match.group(1)) <= 0:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names it and its source."""


_DESTINATION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
TRAIT_NAMES = (
    "birth_year",
    "age_band",
    "gender",
    "city",
    "country",
    "language",
    "registered",
)
"""The profile traits ``export_traits`` may name (besides ``custom.NAME``)."""


class Destination(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where the activation's webhooks go: ``[destinations.NAME]`` in edge.toml."""

    url: str
    """The receiver's http(s) URL; each message is POSTed to it, signed."""
    secret_env: str
    """The environment variable holding the signing secret (never in edge.toml)."""
    rate: int = 10
    """Messages per second at most, per sidecar process."""
    max_attempts: int = 8
    """Tries before a message is dead-lettered (``edge outbox list --state dead``)."""
    timeout: str = "5s"
    """How long the receiver has to answer (``5s``, ``1m``)."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        if not _ENV_NAME.fullmatch(self.secret_env):
            raise ValueError(
                "secret_env must name an environment variable (EDGE_DEST_ESP_SECRET), "
                f"got {self.secret_env!r}"
            )
        if self.rate < 1:
            raise ValueError(f"rate must be 1 or more messages per second, got {self.rate}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more, got {self.max_attempts}")
        if duration_seconds(self.timeout) is None:
            raise ValueError(f"timeout must be a duration such as 5s, got {self.timeout!r}")

    @property
    def timeout_seconds(self) -> float:
        return duration_seconds(self.timeout) or 5.0


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything an operator can set. Field names are the TOML keys and, upper-cased
    with an ``EDGE_`` prefix, the environment variables."""

    upstream: str = ""
    """Base URL of the shop, e.g. ``http://127.0.0.1:8080``. Required for ``edge serve``."""
    host: str = "127.0.0.1"
    """Address to listen on. ``0.0.0.0`` to accept connections from other machines."""
    port: int = 8000
    """Port to listen on."""
    upstream_host: Literal["preserve", "rewrite"] = "preserve"
    """``preserve`` sends the visitor's ``Host`` upstream (the shop sees its public
    name); ``rewrite`` sends the upstream URL's own host."""
    public_url: str = ""
    """The shop's public origin (``https://shop.example``), used when a ``Location``
    names the upstream's own address. Empty: taken from each request's Host and scheme."""
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    """With ``public_url`` unset: the ``Host`` names a redirect's public origin only
    when it is one of these (``shop.example``; ``.shop.example`` for its subdomains);
    otherwise the ``Location`` is a path alone. Empty: any well-formed ``Host``."""
    trust_forwarded: bool = False
    """Trust ``X-Forwarded-Proto``/``-Host`` arriving from the client (set it when a TLS
    terminator or load balancer stands in front of the sidecar)."""
    trust_geo: bool = False
    """Believe the ``X-Geo-Country``/``-Latitude``/``-Longitude`` and ``CF-IPCountry``
    request headers for ``geo.*`` and ``distance_km`` (set it when your CDN or load
    balancer sets them and drops the client's: anyone can send them)."""
    connect_timeout: float = 5.0
    """Seconds to open a connection to the upstream before answering 502."""
    read_timeout: float = 30.0
    """Seconds to wait for the upstream's response head (then 504) or between body chunks."""
    pool_size: int = 64
    """Idle keep-alive connections to the upstream kept open."""
    graceful_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM."""
    max_header_bytes: int = 64 * 1024
    """Largest request head (request line and headers, cookies included) accepted;
    a larger one is answered 431 and its connection closed."""
    header_timeout: float = 10.0
    """Seconds a client has to send a request's whole head, from the moment it connects
    (or, on a kept-alive connection, from the head's first byte); then its connection
    is closed. Stops slow-header (slowloris) clients holding connections."""
    body_timeout: float = 60.0
    """Seconds a client may go without sending any of a request body it announced
    (nginx's ``client_body_timeout``); then the request is answered 408 (or cut, if
    the shop's answer has begun) and the connection closed. Time the sidecar itself
    stopped reading (the shop reading the body slowly) does not count. It also bounds
    how long a client may read none of a response waiting to go out (nginx's
    ``send_timeout``): then the connection is dropped."""
    keepalive_timeout: float = 75.0
    """Seconds an idle kept-alive connection stays open. Keep it above the idle timeout
    of the proxy in front (nginx upstream ``keepalive_timeout`` and AWS ALB: 60 s)."""
    max_connections: int = 0
    """Connections served at once; requests beyond get 503. 0: as many as the
    process's open-file limit allows (``ulimit -n``, two descriptors per connection)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity. Error lines are one line each (the traceback only at ``debug``)
    and a repeated one is written once per 10 s with a count (:mod:`edge.logs`)."""
    access_log: Literal["off", "text", "json"] = "off"
    """One line per request to the shop: time, request id, method, path without the
    query string, status, bytes, duration, outcome, upstream time; ``json``: JSON Lines;
    ``off``: none."""
    access_log_file: str = ""
    """Where the access log goes: a file appended to; empty: stderr."""
    access_log_client_ip: bool = False
    """Add the client's address to each access log line (personal data: off unless you
    need it)."""
    metrics_token: str = ""
    """Bearer token ``GET /_edge/metrics`` requires. Empty: metrics are open to anyone
    who reaches the port (keep ``/_edge/metrics`` off the public side then)."""
    secret: str = ""
    """Signs visitor cookies and keys email hashes. Set it (``EDGE_SECRET``): without
    one a random secret is made at start and every visitor is new after a restart."""
    previous_secrets: list[str] = msgspec.field(default_factory=list)
    """Older secrets still accepted on cookies, so a secret can be rotated."""
    store: str = "sqlite:edge-data/profiles.db"
    """Profile store: ``sqlite:PATH`` (embedded, the default) or ``redis://HOST:PORT/DB``
    (shared by several replicas)."""
    store_timeout_ms: int = 50
    """Deadline of a profile read on the page path, and of readiness's store check
    (milliseconds). Past it the visitor gets the shop's page, unpersonalized."""
    store_write_timeout_ms: int = 2000
    """Deadline of a store write (events, ingest; milliseconds). Past it a batch is
    not acknowledged (503, the sender retries); the sidecar's own events retry."""
    store_breaker_failures: int = 5
    """Consecutive store failures or timeouts that open the circuit breaker: while open
    no call is made to the store (pages go out unpersonalized at no cost)."""
    store_breaker_cooldown: float = 5.0
    """Seconds the breaker stays open before one call probes the store again."""
    admin_token: str = ""
    """Bearer token (or ``X-Edge-Admin-Token``) that shows the details behind
    ``/_edge/readyz`` (which rule file, which line; the store's error). Empty: none."""
    profile_cache_ttl: float = 5.0
    """Seconds a sidecar keeps a profile it read in memory. With replicas sharing a
    store, what another replica recorded shows here after this long at most (this
    replica's own writes at once); 0 reads the store on every request."""
    track: bool = True
    """Record what visitors do. Off: the sidecar only proxies (and personalizes from
    the request itself)."""
    consent_cookie: str = ""
    """Name of the shop's consent cookie. Empty: no consent gate (consent assumed)."""
    consent_values: list[str] = msgspec.field(default_factory=lambda: ["1", "yes", "true", "all"])
    """Values of the consent cookie that mean "yes, track me"."""
    session_cookie: str = ""
    """Name of the shop's login session cookie (``sessionid`` for Django, ``PHPSESSID``
    ...). Set: a visitor cookie linked to a customer shows that customer's profile on
    ``/_edge/profile`` only with the session the shop set on that browser, and a new
    session-less visitor id follows the shop deleting it (a logout). Empty: a linked
    cookie never shows the customer's profile to the browser."""
    logout_paths: list[str] = msgspec.field(default_factory=list)
    """The shop's logout URLs, as page patterns (``/accounts/logout/*``): a request
    for one that the shop accepts (a status below 400) gives the browser a new
    anonymous visitor id."""
    qa_cookie: str = "edge_qa"
    """A browser carrying this cookie (any value) is QA: it sees the placements, and
    nothing it sees or does is counted in the report. Empty: no QA cookie."""
    qa_visitors: list[str] = msgspec.field(default_factory=list)
    """Visitor ids and ``cust:CUSTOMER_ID``s that are QA, as with ``qa_cookie``."""
    ingest_token: str = ""
    """Bearer token accepted by ``POST /_edge/ingest``. Empty: token auth disabled."""
    ingest_secret: str = ""
    """HMAC-SHA256 key for signed ``POST /_edge/ingest`` bodies. Empty: disabled."""
    rules: str = "rules"
    """Directory of the merchant's rule files."""
    snippets: str = "snippets"
    """Directory of the merchant's snippet templates."""
    catalog: str = ""
    """Product feed (CSV, JSON or JSON Lines: id, category, brand, price, name, url)
    for ordering lists and naming cart items; item attributes win over it."""
    languages: list[str] = msgspec.field(default_factory=lambda: ["en", "it"])
    """Languages the shop's snippets exist in; the first is the default."""
    stylesheet: str = "/_edge/static/edge.css"
    """Linked in the head of pages that show snippets; empty when the theme styles
    the blocks itself."""
    browser_pages: list[str] = msgspec.field(default_factory=list)
    """Page types (``category``, ``home``...) personalized in the browser: the sidecar
    sends such a page as the shop made it, caching headers untouched, and the browser
    snippet asks ``/_edge/decide`` (for pages a CDN caches). Placements can be marked
    one by one with ``render = "browser"`` in the rule files."""
    inject_snippet: bool = True
    """Put the browser snippet's script tag before ``</head>`` of the pages personalized
    in the browser. Off: the theme includes it by hand (README, "In the browser")."""
    personalize_max_bytes: int = 4 * 1024 * 1024
    """Pages longer than this (by Content-Length) go out untouched."""
    replay_cache_bytes: int = 32 * 1024 * 1024
    """Memory for kept rewrites (a page rewritten once with the same slots filled is
    replayed, see ``edge/rewrite/replay.py``); 0 turns replaying off."""
    attribution_window: str = "7d"
    """How long after a visitor's first exposure to a placement their orders count for
    it in the report (``edge report``): ``12h``, ``7d``, ``2w``."""
    report_segments: list[str] = msgspec.field(default_factory=list)
    """The segments the report breaks each placement down by (at most 8; a unit counts
    in those it was in at its first exposure). Empty: the rules' first 8 segments."""
    avg_order_value: float | None = None
    """The shop's average order value for ``shop.avg_order_value``; unset: computed
    from the stored profiles at start and every 15 minutes."""
    activation: bool = False
    """Run the activation in ``edge serve``: segment changes and scenario steps found
    through the due index, and the outbox's webhooks delivered to ``destinations``."""
    activation_interval: float = 60.0
    """Seconds between two looks at the due index (the profiles whose segments or
    journeys change by time alone)."""
    destinations: dict[str, Destination] = msgspec.field(default_factory=dict)
    """Webhook receivers by name (``[destinations.esp]``: url, secret_env, rate,
    max_attempts, timeout); scenarios name them."""
    export_traits: list[str] = msgspec.field(default_factory=list)
    """Profile traits ``edge export`` may write besides the profile key, customer id
    and e-mail hash (``city``, ``country``, ``custom.tier``...). Empty: none."""

    def __post_init__(self) -> None:
        if self.upstream:
            parts = urlsplit(self.upstream)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"upstream must be an http:// or https:// URL, got {self.upstream!r}"
                )
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {self.port}")
        for name in (
            "connect_timeout",
            "read_timeout",
            "graceful_timeout",
            "header_timeout",
            "body_timeout",
            "keepalive_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        for name in ("store_timeout_ms", "store_write_timeout_ms", "store_breaker_failures"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive whole number")
        if self.store_breaker_cooldown <= 0:
            raise ValueError("store_breaker_cooldown must be a positive number of seconds")
        if self.max_header_bytes < 1024:
            raise ValueError(
                f"max_header_bytes must be at least 1024 (default 65536), got {self.max_header_bytes}"
            )
        if self.max_connections < 0:
            raise ValueError("max_connections must be 0 (from the open-file limit) or more")
        if self.pool_size < 0:
            raise ValueError("pool_size must be 0 or more")
        if self.profile_cache_ttl < 0:
            raise ValueError("profile_cache_ttl must be 0 (no cache) or more seconds")
        if self.public_url:
            parts = urlsplit(self.public_url)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or parts.username
            ):
                raise ValueError(
                    "public_url must be the shop's public origin, scheme and host only "
                    f"(e.g. https://shop.example), got {self.public_url!r}"
                )
        for host in self.allowed_hosts:
            if not host or any(c in host for c in "/?#@\\ :*"):
                raise ValueError(
                    f"allowed_hosts: {host!r} must be a host name (shop.example, or "
                    ".shop.example for its subdomains), without scheme, port or path"
                )
        if self.session_cookie and not _COOKIE_NAME.fullmatch(self.session_cookie):
            raise ValueError(
                f"session_cookie must be a cookie name (letters, digits, !#$%&'*+-.^_`|~), "
                f"got {self.session_cookie!r}"
            )
        if self.qa_cookie and not _COOKIE_NAME.fullmatch(self.qa_cookie):
            raise ValueError(
                f"qa_cookie must be a cookie name (letters, digits, !#$%&'*+-.^_`|~), "
                f"got {self.qa_cookie!r}; empty turns it off"
            )
        for entry in self.qa_visitors:
            if not entry.strip() or entry != entry.strip():
                raise ValueError(
                    f"qa_visitors: {entry!r} must be a visitor id or cust:CUSTOMER_ID, "
                    "without blanks"
                )
        for pattern in self.logout_paths:
            if not pattern.startswith("/"):
                raise ValueError(
                    f"logout_paths: {pattern!r} must be a path starting with `/` "
                    "(e.g. /accounts/logout/*)"
                )
        for page_type in self.browser_pages:
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", page_type):
                raise ValueError(
                    f"browser_pages: {page_type!r} must be a page type name of the rule "
                    'files\' [page_types] (e.g. "category")'
                )
        if self.replay_cache_bytes < 0:
            raise ValueError("replay_cache_bytes must be 0 (off) or more")
        if len(self.report_segments) > MAX_ARM_SEGMENTS:
            raise ValueError(
                f"report_segments: {len(self.report_segments)} segments, at most "
                f"{MAX_ARM_SEGMENTS}: keep the ones the report should break placements down by"
            )
        for name in self.report_segments:
            if not _SEGMENT.fullmatch(name):
                raise ValueError(
                    f"report_segments: {name!r} must be a segment name (letters, digits "
                    f"and `_`, starting with a letter, at most {MAX_ID} characters)"
                )
        if duration_seconds(self.attribution_window) is None:
            raise ValueError(
                "attribution_window must be a duration such as 12h, 7d or 2w, got "
                f"{self.attribution_window!r}"
            )
        if self.activation_interval <= 0:
            raise ValueError("activation_interval must be a positive number of seconds")
        for name in self.destinations:
            if not _DESTINATION_NAME.fullmatch(name):
                raise ValueError(
                    f"destinations: {name!r} must be a name of lower-case letters, digits, "
                    "- and _ (e.g. [destinations.esp])"
                )
        for trait in self.export_traits:
            if trait not in TRAIT_NAMES and not (
                trait.startswith("custom.") and len(trait) > len("custom.")
            ):
                raise ValueError(
                    f"export_traits: unknown trait {trait!r}; one of {', '.join(TRAIT_NAMES)} "
                    "or custom.NAME"
                )
        if not (self.store == "memory" or self.store.startswith(STORE_SCHEMES)):
            raise ValueError(
                "expected sqlite:PATH, redis://HOST:PORT/DB (rediss://, unix://) or memory, "
                f"got {self.store!r}"
            )

    @property
    def attribution_seconds(self) -> int:
        return int(duration_seconds(self.attribution_window) or 0)

    @property
    def upstream_origin(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the upstream."""
        parts = urlsplit(self.upstream)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        return scheme, parts.hostname or "", port


FIELDS = tuple(Config.__struct_fields__)
_LIST_FIELDS = frozenset(
    f.name for f in msgspec.structs.fields(Config) if getattr(f.type, "__origin__", None) is list
)


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults, the TOML file, the environment and *overrides* (flags that were
    given; ``None`` values are ignored) into a checked :class:`Config`."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}

    explicit = config_file or environ.get("EDGE_CONFIG")
    path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        moved = sorted(set(data) & MOVED.keys())
        if moved:
            raise ConfigError(f"{path}: `{moved[0]}`: {MOVED[moved[0]]}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ConfigError(
                f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(FIELDS)}"
            )
        merged.update(_checked(data, str(path), strict=True))
    elif explicit:
        raise ConfigError(f"{path}: no such config file")

    for name in MOVED:
        if f"EDGE_{name.upper()}" in environ:
            raise ConfigError(f"environment: EDGE_{name.upper()}: {MOVED[name]}")
    env = {
        name: environ[f"EDGE_{name.upper()}"]
        for name in FIELDS
        if f"EDGE_{name.upper()}" in environ
    }
    for name in _LIST_FIELDS & env.keys():  # lists come comma-separated in the environment
        env[name] = [part.strip() for part in env[name].split(",") if part.strip()]  # type: ignore[assignment]
    merged.update(_checked(env, "environment (EDGE_*)", strict=False))

    if overrides:
        merged.update(
            _checked(
                {k: v for k, v in overrides.items() if v is not None}, "command line", strict=False
            )
        )
    try:
        return msgspec.convert(merged, Config)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"configuration: {exc}") from None


def _checked(values: Mapping[str, Any], source: str, *, strict: bool) -> dict[str, Any]:
    """Convert each value on its own so the error names the key and where it came from."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            probe = msgspec.convert({name: value}, Config, strict=strict)
        except msgspec.ValidationError as exc:
            env = f" (EDGE_{name.upper()})" if source.startswith("environment") else ""
            raise ConfigError(f"{source}: {name}{env}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{source}: {name}: {exc}") from None
        out[name] = getattr(probe, name)
    return out
