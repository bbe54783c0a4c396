"""One request's head, parsed once: what every step of the request path reads.

:meth:`RequestHead.read_headers` walks the ASGI scope's headers once and keeps the few
the sidecar acts on (cookies, Accept, Accept-Language, User-Agent, Referer, the
forwarded headers, the conditional ones, the geo headers); everything downstream
(identity, the decision, the record) reads them from here instead of scanning
``scope["headers"]`` again. Headers stay the bytes the client sent; the header list
itself is kept whole for the proxy, which walks it once more to forward it.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

from edge.identity import parse_cookies

__all__ = ["RequestHead", "is_crawler", "read_body"]

# Search engines and link-preview fetchers: they get the page the merchant published,
# and nothing of theirs is recorded.
# Searched in the lowercased header: with re.IGNORECASE the same search took 8x as long.
EDGE_PREFIX: Final = "/_edge"
"""The sidecar's own space: its endpoints are under it, never forwarded to the shop."""
_EDGE_SPACE: Final = EDGE_PREFIX + "/"


def sidecar_path(path: str) -> bool:
    """Whether *path* (decoded, as the scope's) is the sidecar's own (``/_edge``,
    ``/_edge/...``), not the shop's."""
    return path.startswith(_EDGE_SPACE) or path == EDGE_PREFIX


_CRAWLER: Final = re.compile(
    rb"bot\b|bot/|crawler|spider|slurp|facebookexternalhit|bingpreview|mediapartners-google"
    rb"|adsbot|lighthouse|pingdom|uptimerobot|embedly|quora link preview|whatsapp|telegrambot"
)


@functools.lru_cache(maxsize=4096)
def is_crawler(user_agent: bytes) -> bool:
    """Kept by User-Agent: a few hundred distinct headers cover nearly every request."""
    return _CRAWLER.search(user_agent.lower()) is not None


# The headers the head keeps, by their ASGI (lower-case) name: the first of each
# wins, but for Cookie, whose repeats (HTTP/2 splits it) are joined.
_KEPT: Final = {
    b"cookie": "cookie",
    b"accept": "accept",
    b"accept-language": "accept_language",
    b"user-agent": "user_agent",
    b"referer": "referer",
    b"host": "host",
    b"content-length": "content_length",
    b"x-forwarded-proto": "forwarded_proto",
    b"x-forwarded-host": "forwarded_host",
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"sec-fetch-dest": "sec_fetch_dest",
    b"x-geo-country": "geo_country",
    b"cf-ipcountry": "cf_country",
    b"x-geo-latitude": "geo_latitude",
    b"x-geo-longitude": "geo_longitude",
}


class RequestHead:
    """The parts of a request the sidecar reads, as the client sent them.

    Made in two steps: :meth:`parse` takes what the scope has ready (method, path,
    query, scheme, client, the header list); :meth:`read_headers` reads the headers
    the sidecar acts on, once, when the request is one the sidecar has to do with
    (a bare proxied request never needs them). :meth:`parse` reads them too unless
    told not to."""

    __slots__ = (
        "_cookies",
        "accept",
        "accept_language",
        "cf_country",
        "client",
        "content_length",
        "cookie",
        "forwarded_host",
        "forwarded_proto",
        "geo_country",
        "geo_latitude",
        "geo_longitude",
        "headers",
        "host",
        "if_modified_since",
        "if_none_match",
        "method",
        "path",
        "query",
        "raw_path",
        "referer",
        "scheme",
        "sec_fetch_dest",
        "user_agent",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        raw_path: bytes | None = None,
        scheme: str = "http",
        client: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
        read: bool = True,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        """The query string; :meth:`without_param` may take a parameter out of it."""
        self.raw_path = raw_path if raw_path is not None else path.encode()
        self.scheme = scheme
        self.client = client
        self.headers: list[tuple[bytes, bytes]] = headers if headers is not None else []
        """Every header as received (names lower-case), for forwarding."""
        self._cookies: dict[str, str] | None = None
        if read:
            self.read_headers()

    def read_headers(self) -> None:
        """Read the headers the sidecar acts on (absent ones read as empty)."""
        self.cookie = b""
        """Every Cookie header, joined with ``; ``."""
        self.accept: bytes | None = None
        """None when the client sent no Accept header (it accepts anything)."""
        self.accept_language = self.user_agent = self.referer = self.host = b""
        self.content_length = self.forwarded_proto = self.forwarded_host = b""
        self.if_none_match = self.if_modified_since = self.sec_fetch_dest = b""
        self.geo_country = self.cf_country = self.geo_latitude = self.geo_longitude = b""
        kept = _KEPT
        for name, value in self.headers:
            field = kept.get(name)
            if field is None:
                continue
            if field == "cookie":
                self.cookie = self.cookie + b"; " + value if self.cookie else value
            elif field == "accept":
                if self.accept is None:
                    self.accept = value
            elif not getattr(self, field):  # the first of each wins
                setattr(self, field, value)

    @classmethod
    def parse(cls, scope: dict[str, Any], *, read: bool = True) -> RequestHead:
        """The head of an ASGI HTTP scope (its headers read unless *read* is false:
        then :meth:`read_headers` before any of them is used)."""
        # Filled in place rather than through __init__'s keywords: every proxied
        # request makes one, and keyword passing costs more than the rest together.
        head = cls.__new__(cls)
        head.method = scope["method"]
        head.path = scope["path"]
        head.query = scope["query_string"]
        head.raw_path = scope.get("raw_path") or head.path.encode()
        head.scheme = scope["scheme"]
        client = scope.get("client")
        head.client = client[0] if client else ""
        head.headers = scope["headers"]
        head._cookies = None
        if read:
            head.read_headers()
        return head

    @classmethod
    def of(
        cls,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        scheme: str,
        client: tuple[str, int] | None,
        headers: list[tuple[bytes, bytes]],
    ) -> RequestHead:
        """:meth:`parse` without a scope (the passthrough below ASGI), headers unread."""
        head = cls.__new__(cls)
        head.method = method
        head.path = path
        head.query = query
        head.raw_path = raw_path or path.encode()
        head.scheme = scheme
        head.client = client[0] if client else ""
        head.headers = headers
        head._cookies = None
        return head

    @property
    def target(self) -> bytes:
        """The request target to send upstream: the path as the client sent it, and
        the query."""
        return self.raw_path + b"?" + self.query if self.query else self.raw_path

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies, parsed on first use."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = parse_cookies(self.cookie) if self.cookie else {}
        return cookies

    @property
    def conditional(self) -> bool:
        """A revalidation: the client holds a copy and asks whether it is current."""
        return bool(self.if_none_match or self.if_modified_since)

    @property
    def query_text(self) -> str:
        return self.query.decode("latin-1")

    @property
    def wants_html(self) -> bool:
        """Whether an HTML answer is acceptable (no Accept header: anything is)."""
        accept = self.accept
        return accept is None or b"text/html" in accept or b"*/*" in accept

    @property
    def navigates(self) -> bool:
        """Whether the browser asks for a page to show (a navigation), not something a
        page loads (an image, a script, a fetch): ``Sec-Fetch-Dest`` where the browser
        sends it, else an ``Accept`` that names HTML."""
        dest = self.sec_fetch_dest
        if dest:
            return dest in (b"document", b"iframe", b"frame")
        return self.accept is not None and b"text/html" in self.accept

    def without_conditionals(self) -> None:
        """Forget the client's validators: the upstream is then asked for the page
        itself rather than a 304."""
        self.headers = [
            (n, v) for n, v in self.headers if n not in (b"if-none-match", b"if-modified-since")
        ]
        self.if_none_match = self.if_modified_since = b""

    def without_param(self, name: bytes) -> bytes | None:
        """Take query parameter *name* out of the query (the shop never sees it) and
        return its last value, or None when it was not there."""
        if name not in self.query:
            return None
        kept = []
        value = None
        for part in self.query.split(b"&"):
            key, _, raw = part.partition(b"=")
            if key == name:
                value = raw
            else:
                kept.append(part)
        if value is not None:
            self.query = b"&".join(kept)
        return value


async def read_body(head: RequestHead, receive: Any, limit: int) -> bytes | None:
    """The request's body, or None when it is longer than *limit* bytes (told by its
    Content-Length before anything is read) or the client went away."""
    length = head.content_length
    if length and (not length.isdigit() or int(length) > limit):
        return None
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)
