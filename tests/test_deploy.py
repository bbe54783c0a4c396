"""The deployment of compose.yaml, checked as a file and run on this machine.

There is no Docker engine here, so the file is read as Compose reads it (YAML, then
``${NAME}`` interpolation, ``$$`` for a literal ``$``) and checked: the services, the
sidecars' environment (every variable a setting edge.config knows, the whole a valid
configuration), the nginx configuration. Then the same shape runs for real: nginx
with compose.yaml's configuration (only the addresses and the certificate paths filled
in: a self-signed certificate, TLS on loopback), two ``edge serve`` processes of this
venv with compose.yaml's environment (the store, upstream and ports pointed at this
machine's), one redis-server, and a small shop. One visitor's profile is the same
whichever replica answers; killing a replica under load loses no acknowledged event
and counts none twice.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from edge.app import create_app
from edge.config import FIELDS, ConfigError, load_config
from edge.profiles import events as ev
from edge.profiles.model import Profile, decode
from edge.profiles.store import MemoryStore
from tests.conftest import free_port, serving, wait_listening
from tests.redis_server import RedisServer, require_redis_server

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
EDGE_COMMAND = Path(sys.executable).parent / "edge"
REPLICAS = ("edge-a", "edge-b")
OPERATOR = {  # what an operator exports before `docker compose up`
    "SHOP_UPSTREAM": "http://10.0.0.5:8080",
    "SHOP_PUBLIC_URL": "https://shop.example",
    "EDGE_SECRET": "deploy-test-secret",
    "EDGE_INGEST_SECRET": "deploy-ingest-key",
}
BROWSER = {"Accept": "text/html,application/xhtml+xml", "User-Agent": "Mozilla/5.0 Firefox/128.0"}

# --- compose.yaml as Compose reads it ----------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class Unset(Exception):
    """A ``${NAME:?message}`` without NAME: Compose refuses the file with the message."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``,
    ``$$`` for ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        if op in (":-", "-"):
            return value if value else arg
        if op in (":?", "?") and not value:
            raise Unset(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(one, text)


def resolved(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: resolved(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolved(v, env) for v in node]
    return node


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return resolved(raw, OPERATOR if env is None else env)  # type: ignore[no-any-return]


def nginx_content(spec: dict[str, Any]) -> str:
    (mount,) = spec["services"]["nginx"]["configs"]
    assert mount["target"] == "/etc/nginx/conf.d/default.conf"
    return spec["configs"][mount["source"]]["content"]  # type: ignore[no-any-return]


# --- the file ----------------------------------------------------------------------------


def test_compose_services_and_the_sidecars_environment() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"nginx", *REPLICAS, "redis"}
    a, b = (services[name] for name in REPLICAS)
    assert a == b, "the replicas differ"
    assert a["build"] == "." and "8000" in a["expose"]
    assert a["depends_on"]["redis"]["condition"] == "service_healthy"
    env = a["environment"]
    assert env["EDGE_STORE"] == "redis://redis:6379/0"
    assert env["EDGE_TRUST_FORWARDED"] == "true"
    assert env["EDGE_UPSTREAM"] == OPERATOR["SHOP_UPSTREAM"]
    assert env["EDGE_PUBLIC_URL"] == OPERATOR["SHOP_PUBLIC_URL"]
    assert env["EDGE_SECRET"] == OPERATOR["EDGE_SECRET"]
    unknown = [k for k in env if k.removeprefix("EDGE_").lower() not in FIELDS]
    assert unknown == [], f"not settings of edge/config.py: {unknown}"
    config = load_config(environ=env)
    assert config.trust_forwarded and config.store.startswith("redis://")
    assert config.public_url == "https://shop.example" and config.ingest_secret
    # The Dockerfile's defaults the file relies on: listening on 0.0.0.0:8000.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EDGE_HOST=0.0.0.0" in dockerfile and "EDGE_PORT=8000" in dockerfile
    mounts = {m.split(":")[1] for m in a["volumes"]}
    assert mounts == {"/srv/edge/rules", "/srv/edge/snippets"}  # where the image reads them
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendfsync") + 1] == "always"
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"


def test_compose_refuses_to_start_without_the_operator_s_values() -> None:
    for missing in OPERATOR:
        env = {k: v for k, v in OPERATOR.items() if k != missing}
        with pytest.raises(Unset, match=missing):
            compose(env)


def test_the_nginx_configuration_balances_both_replicas_behind_tls() -> None:
    content = nginx_content(compose())
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", content, re.M)
    assert servers == [(name, "8000") for name in REPLICAS]
    assert "$$" not in content and "$host" in content  # nginx's own variables survived
    for line in (
        "listen 443 ssl http2;",
        "ssl_certificate /etc/nginx/tls/fullchain.pem;",
        "ssl_certificate_key /etc/nginx/tls/privkey.pem;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $host;",
        "proxy_set_header Host $host;",
        "proxy_next_upstream error timeout;",
        "proxy_buffering off;",
    ):
        assert line in content, line


async def test_profile_cache_ttl_is_how_stale_another_replica_may_be() -> None:
    """Replicas on one store: what one records, another that read the profile before
    sees after ``profile_cache_ttl`` (at once with 0); the writer itself at once."""
    store = MemoryStore()

    def replica(ttl: float) -> Any:
        settings = {"upstream": "http://127.0.0.1:9", "secret": "s", "profile_cache_ttl": ttl}
        return create_app(load_config(settings, environ={}), store).profiles

    cached, writer, uncached = replica(5), replica(5), replica(0)
    for profiles in (cached, writer, uncached):
        assert await profiles.load("v1") is None
    await writer.record("v1", [ev.PageViewed(path="/")], ev.Source.BROWSER)
    assert (await writer.load("v1")) is not None
    assert (await uncached.load("v1")) is not None
    assert await cached.load("v1") is None  # its copy, for up to 5 s
    assert load_config({"profile_cache_ttl": 0}, environ={}).profile_cache_ttl == 0
    with pytest.raises(ConfigError, match="profile_cache_ttl"):
        load_config({"profile_cache_ttl": -1}, environ={})


# --- the shape, running -------------------------------------------------------------------

RULES = {
    "theme.toml": '[page_types]\nhome = "/"\n\n[slots.hero]\nselect = "#hero"\npages = ["home"]\n',
    "segments.toml": '[segments.buyer]\nlabel = "Bought something"\nwhen = "orders >= 1"\n',
    "placements.toml": (
        '[[placements]]\nid = "hero-buyer"\nslot = "hero"\nsegment = "buyer"\n'
        'snippet = "hero_buyer.html"\n'
    ),
}
BUYER = "Welcome back, buyer"


class Shop(BaseHTTPRequestHandler):
    """The shop: a home page with the hero slot."""

    def do_GET(self) -> None:
        body = (
            b"<!doctype html><html><head><title>Shop</title></head><body>"
            b'<div id="hero"><h1>Our new collection</h1></div><p>Products</p></body></html>'
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Deployment:
    work: Path
    redis_url: str
    https: int
    http: int
    replicas: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def port(self, replica: str) -> int:
        return self.replicas[replica][1]


def _self_signed(tls: Path) -> None:
    tls.mkdir()
    key, cert = str(tls / "privkey.pem"), str(tls / "fullchain.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run(
        [*argv, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
        timeout=60,
    )


def nginx_conf(work: Path, content: str, ports: dict[str, int], https: int, http: int) -> Path:
    """compose.yaml's nginx configuration, with this machine's addresses and the test
    certificate filled in, inside the main context nginx's image provides."""
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "/etc/nginx/tls/": f"{work / 'tls'}/",
        **{f"server {name}:8000 ": f"server 127.0.0.1:{port} " for name, port in ports.items()},
    }
    for old, new in replacements.items():
        assert old in content, f"compose.yaml's nginx configuration has no {old!r} any more"
        content = content.replace(old, new)
    (work / "shop-edge.conf").write_text(content)
    temps = "\n".join(
        f"    {kind}_temp_path {work}/tmp-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process on;\nworker_processes 1;\n{user}"
        f"pid {work}/nginx.pid;\nerror_log {work}/nginx.error.log warn;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n    access_log off;\n{temps}\n    include {work}/shop-edge.conf;\n}}\n"
    )
    return conf


def start_replica(env: dict[str, str], port: int, work: Path, name: str) -> subprocess.Popen[bytes]:
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [str(EDGE_COMMAND), "serve"],
        env={**env, "EDGE_PORT": str(port)},
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_listening(port, proc=proc)
    return proc


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if shutil.which("nginx") is None or shutil.which("openssl") is None:
        pytest.fail("nginx and openssl are needed: apt-get install nginx-light openssl")
    work = tmp_path_factory.mktemp("deploy")
    _self_signed(work / "tls")
    for directory, files in (
        ("rules", RULES),
        ("snippets", {"hero_buyer.html": f'<div id="hero"><p class="buyer">{BUYER}</p></div>'}),
    ):
        (work / directory).mkdir()
        for name, text in files.items():
            (work / directory / name).write_text(text)
    server = RedisServer(require_redis_server(), work).start()
    with serving(Shop) as shop:
        spec = compose({**OPERATOR, "SHOP_UPSTREAM": shop})
        deployment = Deployment(work, server.url, https=free_port(), http=free_port())
        try:
            # compose.yaml's environment, with this machine's store and addresses (and
            # the directories the image mounts its rules and snippets on)
            env = dict(spec["services"]["edge-a"]["environment"])
            env.update(
                EDGE_STORE=server.url,
                EDGE_HOST="127.0.0.1",
                EDGE_RULES=str(work / "rules"),
                EDGE_SNIPPETS=str(work / "snippets"),
                EDGE_LOG_LEVEL="warning",
            )
            base = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
            for name in REPLICAS:
                port = free_port()
                proc = start_replica({**base, **env}, port, work, name)
                deployment.replicas[name] = (proc, port)
            ports = {name: port for name, (_, port) in deployment.replicas.items()}
            conf = nginx_conf(work, nginx_content(spec), ports, deployment.https, deployment.http)
            nginx = subprocess.Popen(
                ["nginx", "-e", "stderr", "-p", str(work), "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=(work / "nginx.stderr").open("wb"),
            )
            deployment.procs.append(nginx)
            wait_listening(deployment.https, proc=nginx)
            yield deployment
        finally:
            for proc, _ in deployment.replicas.values():
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(20)
            for proc in deployment.procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            server.stop()


_CLIENT_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (made once: no CA store to load)
_CLIENT_TLS.check_hostname = False
_CLIENT_TLS.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate


def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    tls: bool = False,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    if tls:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=15, context=_CLIENT_TLS
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    key = OPERATOR["EDGE_INGEST_SECRET"].encode()
    mac = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Edge-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


def ingest(port: int, events: list[dict[str, Any]], *, tls: bool = False) -> int:
    body = json.dumps({"events": events}).encode()
    return request(port, "/_edge/ingest", method="POST", headers=signed(body), body=body, tls=tls)[
        0
    ]


def profile_on(port: int, cookie: str) -> dict[str, Any]:
    # the shop's backend asks (signed like ingest): a customer's profile is not shown
    # to a visitor cookie alone (README, "Shared devices and logout")
    headers = {"Cookie": cookie, **signed(b"")}
    status, _, body = request(port, "/_edge/profile", headers=headers)
    assert status == 200
    return json.loads(body)["profile"] or {}


def wait_for(what: Any, check: Any, timeout: float = 20.0) -> Any:
    """Poll *check* until it returns something true (bounded: the local profile cache
    of the other replica keeps a copy for a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what() if callable(what) else what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_one_visitor_one_profile_whichever_replica_answers(deployment: Deployment) -> None:
    a, b = (deployment.port(name) for name in REPLICAS)
    status, headers, page = request(a, "/", headers=BROWSER)
    assert status == 200 and BUYER.encode() not in page
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    visitor = cookie.removeprefix("edge_vid=").split(".")[0]
    status, headers, page = request(b, "/", headers={**BROWSER, "Cookie": cookie})
    assert status == 200 and BUYER.encode() not in page  # (B has the profile cached now)
    assert "Set-Cookie" not in headers  # B reads A's cookie: same secret
    request(a, "/", headers={**BROWSER, "Cookie": cookie})
    order = {
        "event": "Order Completed",
        "order_id": "D-1",
        "total": 120.0,
        "anonymous_id": visitor,
        "user_id": "deploy-1",
    }
    assert ingest(a, [order]) == 200

    assert BUYER.encode() in request(a, "/", headers={**BROWSER, "Cookie": cookie})[2]
    seen = wait_for(
        "replica B sees the order ingested through A",
        lambda: (p := profile_on(b, cookie)).get("order_count") == 1 and p,
    )
    assert seen["customer_id"] == "deploy-1" and seen["lifetime_spent"] == 120.0
    # the page views recorded by both replicas are in the one profile (written in batches)
    wait_for(
        "the three page views",
        lambda: sum(profile_on(b, cookie).get("pageview_days", {}).values()) >= 3,
    )
    assert BUYER.encode() in request(b, "/", headers={**BROWSER, "Cookie": cookie})[2]
    assert profile_on(a, cookie) == profile_on(b, cookie)

    # through nginx, over TLS: whichever replica answers, the same page for this visitor
    for _ in range(4):
        status, _, page = request(
            deployment.https, "/", headers={**BROWSER, "Cookie": cookie}, tls=True
        )
        assert status == 200 and BUYER.encode() in page
    # a new visitor through nginx gets a Secure cookie (X-Forwarded-Proto from nginx,
    # believed with trust_forwarded); a client's own X-Forwarded-Proto is replaced
    _, headers, _ = request(deployment.https, "/", headers=BROWSER, tls=True)
    assert "secure" in headers["Set-Cookie"].lower()
    status, headers, _ = request(deployment.http, "/some/page?x=1", headers=BROWSER)
    assert status == 301 and headers["Location"].startswith("https://")
    assert headers["Location"].endswith("/some/page?x=1")


@dataclass
class Load:
    """A shop sending its orders and email events through nginx, every batch again
    (with the same ids) until acknowledged; and a browser loading pages meanwhile."""

    https: int
    batches: int
    acknowledged: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    """Statuses that made the sender send a batch again (502 from nginx: the replica
    died with the request; 409: that signature was claimed already)."""
    failures: list[str] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def events(n: int) -> list[dict[str, Any]]:
        customer = f"load-{n % 8}"
        return [
            {"event": "Order Completed", "order_id": f"L-{n}", "total": 2.5, "user_id": customer},
            {"event": "Email Opened", "event_id": f"open-{n}", "user_id": customer},
        ]

    def send(self, lane: int = 0, lanes: int = 1) -> None:
        for n in range(lane, self.batches, lanes):
            for _ in range(100):
                try:
                    status = ingest(self.https, self.events(n), tls=True)
                except OSError as exc:  # (nginx itself stays up: this is not expected)
                    self.failures.append(f"batch {n}: {exc}")
                    time.sleep(0.05)
                    continue
                if 200 <= status < 300:
                    self.acknowledged.append(n)
                    break
                self.refused.append(status)
                time.sleep(0.02)
            else:
                self.failures.append(f"batch {n} never acknowledged")

    def browse(self) -> None:
        while not self.stop.is_set():
            try:
                self.pages.append(request(self.https, "/", headers=BROWSER, tls=True)[0])
            except OSError as exc:
                self.failures.append(f"page: {exc}")


@pytest.mark.slow
def test_killing_a_replica_under_load_loses_no_acknowledged_event(
    deployment: Deployment,
) -> None:
    """SIGKILL of one replica while the shop's events and visitors' pages flow through
    nginx: every acknowledged event is in Redis, once (the retries of a batch that died
    with the replica are counted once, by order id and event id)."""
    load = Load(deployment.https, batches=240)
    senders = [threading.Thread(target=load.send, args=(lane, 3)) for lane in range(3)]
    browser = threading.Thread(target=load.browse)
    for sender in senders:
        sender.start()
    browser.start()
    try:
        wait_for(
            lambda: (
                f"a quarter of the batches acknowledged: {len(load.acknowledged)} "
                f"{load.refused[:5]}, {load.failures[:3]}, {len(load.pages)} pages"
            ),
            lambda: len(load.acknowledged) >= 60,
        )
        victim, _ = deployment.replicas["edge-a"]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        pages_at_kill = len(load.pages)
        for sender in senders:
            sender.join(120)
        wait_for("pages served by the survivor", lambda: len(load.pages) > pages_at_kill + 20)
    finally:
        load.stop.set()
        for sender in senders:
            sender.join(120)
        browser.join(30)
    print(f"{len(load.acknowledged)} batches acknowledged; sent again after: {load.refused}")
    assert not any(sender.is_alive() for sender in senders)
    assert load.failures == []
    assert sorted(load.acknowledged) == list(range(load.batches))
    # 502: nginx, the replica died mid-request; 409: the dead replica had claimed that
    # signature (the replay cache), and a resend signed in the same second is the same
    # signature: the sender signs again a moment later, as the README says
    assert set(load.refused) <= {502, 409}, load.refused
    assert set(load.pages) == {200}  # GETs went to the other replica

    # In Redis itself (no replica's cache): each customer's orders and opens, once each.
    client = redis.Redis.from_url(deployment.redis_url)
    try:
        for c in range(8):
            data = client.get(f"edge:p:cust:load-{c}")
            assert data is not None, c
            stored: Profile = decode(data)
            sent = [n for n in load.acknowledged if n % 8 == c]
            assert stored.order_count == len(sent), c
            assert stored.lifetime_spent == pytest.approx(2.5 * len(sent))
            assert sum(stored.email_open_days.values()) == len(sent), c
            assert {o.order_id for o in stored.orders} <= {f"L-{n}" for n in sent}
    finally:
        client.close()
    # and a batch sent once more, as a shop would after a lost answer: acknowledged,
    # counted nothing
    assert ingest(deployment.https, Load.events(3), tls=True) == 200
    assert request(deployment.port("edge-b"), "/_edge/healthz")[0] == 200
    client = redis.Redis.from_url(deployment.redis_url)
    try:
        stored = decode(client.get("edge:p:cust:load-3"))  # type: ignore[arg-type]
        assert stored.order_count == len([n for n in load.acknowledged if n % 8 == 3])
    finally:
        client.close()
