"""Content codings and charsets for the rewriting path (pure, streaming, no I/O).

An upstream page arrives compressed (``Content-Encoding: gzip``, ``br``, …). To edit
it the sidecar decodes it chunk by chunk, rewrites, and encodes the result again for
the client::

    decoder = Decoder.for_header(upstream_headers["content-encoding"], max_output=8 << 20)
    encoder = Encoder.for_header("br")
    for chunk in body:
        out = encoder.feed(rewriter.write(decoder.feed(chunk)))
    out += encoder.feed(rewriter.write(decoder.flush()) + rewriter.end()) + encoder.finish()

Codings: ``gzip`` (and ``x-gzip``; concatenated members are one stream), ``deflate``
(zlib-wrapped as RFC 9110 says, or raw deflate as some servers send: told apart by
the first two bytes), ``br`` (the ``brotli`` package: measured faster than
``brotlicffi`` here for both directions, which is used only when ``brotli`` is
missing), ``zstd`` when the ``zstandard`` package is installed, and ``identity``.
A list (``gzip, br``: gzip applied first) is decoded in reverse order. A coding not
supported here raises :class:`UnsupportedCoding` before any byte is read, so the
caller can stream the page through untouched.

A corrupt or truncated stream raises :class:`CodecError`, and so does a stream that
decodes to more than ``max_output`` bytes (a decompression bomb): output is bounded
inside the decompressor, never materialised first and measured after.

Known limits of zstd: a truncated stream is not detected (the ``zstandard``
streaming API does not report the end of a frame while keeping output bounded), and
corruption is detected only in frames that carry a checksum (ours do); the decoded
prefix is returned.
"""

from __future__ import annotations

import codecs
import functools
import re
import zlib
from collections.abc import Callable
from typing import Any, Final, Protocol

try:  # Google's binding: ~25% faster than brotlicffi here (bench in the module doc).
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the installation
    try:
        import brotlicffi as _brotli
    except ImportError:
        _brotli = None

try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the installation
    _zstd = None

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "CodecError",
    "Decoder",
    "Encoder",
    "UnsupportedCoding",
    "charset_of",
    "codings",
    "encode_text",
    "header_codings",
    "page_charset",
    "supported",
    "too_big",
]

DEFAULT_MAX_OUTPUT: Final = 16 << 20
"""Decoded bytes allowed per body unless the caller says otherwise."""

LEVELS: Final = {"gzip": 5, "deflate": 5, "br": 4, "zstd": 3}
"""Encoder levels chosen for speed on the hot path: close to the best ratio per CPU ms."""


class CodecError(Exception):
    """The body cannot be decoded: corrupt, truncated, or larger than allowed."""


class UnsupportedCoding(CodecError):
    """A content coding this build cannot decode (or encode); pass the body through."""


_ALIASES: Final = {
    "x-gzip": "gzip",
    "gzip": "gzip",
    "deflate": "deflate",
    "br": "br",
    "zstd": "zstd",
    "identity": "identity",
}


def _available(coding: str) -> bool:
    if coding == "br":
        return _brotli is not None
    if coding == "zstd":
        return _zstd is not None
    return True


def codings(header: str | None) -> list[str]:
    """The codings of a ``Content-Encoding`` value in the order they were applied,
    normalised (``x-gzip`` → ``gzip``), without ``identity``. Raises
    :class:`UnsupportedCoding` for one not supported here."""
    result = []
    for raw in (header or "").split(","):
        name = raw.strip().lower()
        if not name:
            continue
        coding = _ALIASES.get(name)
        if coding is None or not _available(coding):
            raise UnsupportedCoding(f"content coding {name!r} is not supported")
        if coding != "identity":
            result.append(coding)
    if len(result) > 3:
        raise UnsupportedCoding(f"{len(result)} stacked content codings ({header!r})")
    return result


@functools.lru_cache(maxsize=64)
def header_codings(header: bytes) -> tuple[str, ...] | None:
    """:func:`codings` of a ``Content-Encoding`` header's raw value (empty: none),
    None when one is not supported. Remembered: a shop sends one or two values."""
    try:
        return tuple(codings(header.decode("latin-1") or None))
    except UnsupportedCoding:
        return None


def supported(header: str | None) -> bool:
    """Whether a body with this ``Content-Encoding`` can be decoded and rewritten."""
    try:
        codings(header)
    except UnsupportedCoding:
        return False
    return True


# --- decoding --------------------------------------------------------------------


class _Stage(Protocol):
    def feed(self, data: bytes, limit: int) -> bytes: ...
    def flush(self, limit: int) -> bytes: ...


def too_big(limit: int) -> CodecError:
    """The error for a decoded body past its limit (*limit*: the bytes it had left)."""
    return CodecError(f"decoded body larger than the limit ({limit} bytes more were allowed)")


class _ZlibStage:
    """gzip (members concatenated), zlib-wrapped or raw deflate."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.pending = b""  # deflate: bytes held until the wrapping can be told
        self.d: Any = zlib.decompressobj(31) if coding == "gzip" else None
        self.started = False

    def _start_deflate(self, data: bytes) -> None:
        # A zlib header: CM=8, window <= 32K, and the check bits make it a multiple of 31.
        cmf, flg = data[0], data[1]
        wrapped = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
        self.d = zlib.decompressobj(15 if wrapped else -15)

    def feed(self, data: bytes, limit: int) -> bytes:
        if self.d is None:
            data = self.pending + data
            if len(data) < 2:
                self.pending = data
                return b""
            self.pending = b""
            self._start_deflate(data)
        if data:
            self.started = True
        out = []
        n = 0
        while data:
            if self.d.eof:
                if self.coding != "gzip":
                    raise CodecError(f"data after the end of the {self.coding} stream")
                if not data.lstrip(b"\0"):  # padding some servers add: ignored
                    break
                self.d = zlib.decompressobj(31)  # the next gzip member
            try:
                chunk = self.d.decompress(data, limit - n + 1)
            except zlib.error as exc:
                raise CodecError(f"corrupt {self.coding} stream: {exc}") from None
            n += len(chunk)
            if n > limit:
                raise too_big(limit)
            out.append(chunk)
            data = self.d.unconsumed_tail or self.d.unused_data
            if self.d.unconsumed_tail == b"" and not self.d.eof:
                break
        return b"".join(out)

    def flush(self, limit: int) -> bytes:
        if self.d is None:
            if self.pending:
                raise CodecError(f"truncated {self.coding} stream")
            return b""  # empty body
        if not self.started:
            return b""
        try:
            tail = self.d.flush()
        except zlib.error as exc:  # pragma: no cover - flush after bounded feeds is empty
            raise CodecError(f"corrupt {self.coding} stream: {exc}") from None
        if len(tail) > limit:
            raise too_big(limit)
        if not self.d.eof:
            raise CodecError(f"truncated {self.coding} stream")
        return tail


class _BrotliStage:
    def __init__(self) -> None:
        assert _brotli is not None
        self.d = _brotli.Decompressor()
        self.bounded = _brotli.__name__ == "brotli"  # brotlicffi has no output limit
        self.started = False

    def feed(self, data: bytes, limit: int) -> bytes:
        if not data:
            return b""
        self.started = True
        if self.d.is_finished():
            raise CodecError("data after the end of the br stream")
        try:
            if self.bounded:
                out = self.d.process(data, output_buffer_limit=limit + 1)
                while len(out) <= limit and not self.d.can_accept_more_data():
                    out += self.d.process(b"", output_buffer_limit=limit + 1 - len(out))
            else:  # pragma: no cover - brotlicffi fallback
                out = self.d.process(data)
        except _brotli.error as exc:
            raise CodecError(f"corrupt br stream: {exc}") from None
        if len(out) > limit:
            raise too_big(limit)
        return out

    def flush(self, limit: int) -> bytes:
        if self.started and not self.d.is_finished():
            raise CodecError("truncated br stream")
        return b""


class _Overflow(Exception):
    pass


class _Sink:
    __slots__ = ("limit", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise _Overflow
        self.parts.append(bytes(data))
        return len(data)


class _ZstdStage:
    def __init__(self) -> None:
        assert _zstd is not None
        self.sink = _Sink()
        # The writer hands output to the sink in 64 KiB pieces, so the limit holds
        # however well the input compresses.
        self.w = _zstd.ZstdDecompressor().stream_writer(self.sink, write_size=1 << 16)

    def feed(self, data: bytes, limit: int) -> bytes:
        if not data:
            return b""
        sink = self.sink
        sink.limit, sink.size, sink.parts = limit, 0, []
        try:
            self.w.write(data)
        except _Overflow:
            raise too_big(limit) from None
        except _zstd.ZstdError as exc:
            raise CodecError(f"corrupt zstd stream: {exc}") from None
        return b"".join(sink.parts)

    def flush(self, limit: int) -> bytes:
        return b""


def _stage(coding: str) -> _Stage:
    if coding in ("gzip", "deflate"):
        return _ZlibStage(coding)
    if coding == "br":
        return _BrotliStage()
    return _ZstdStage()


class Decoder:
    """Decodes one body, fed in chunks; at most ``max_output`` decoded bytes in all.

    ``feed(chunk)`` returns what can be decoded so far (often ``b""``); ``flush()``
    ends the body, returns the rest and checks that the stream was complete.
    """

    def __init__(self, coding_list: list[str], *, max_output: int = DEFAULT_MAX_OUTPUT) -> None:
        # Decode in reverse order of application.
        self._stages = [_stage(c) for c in reversed(coding_list)]
        self.codings = list(coding_list)
        self.max_output = max_output
        self.decoded = 0
        self._failed: CodecError | None = None

    @classmethod
    def for_header(
        cls, content_encoding: str | None, *, max_output: int = DEFAULT_MAX_OUTPUT
    ) -> Decoder:
        """A decoder for a ``Content-Encoding`` value; :class:`UnsupportedCoding` if
        any coding in it is not supported."""
        return cls(codings(content_encoding), max_output=max_output)

    @property
    def identity(self) -> bool:
        return not self._stages

    def feed(self, chunk: bytes) -> bytes:
        return self._run(chunk, final=False)

    def flush(self) -> bytes:
        return self._run(b"", final=True)

    def _run(self, data: bytes, final: bool) -> bytes:
        if self._failed is not None:
            raise self._failed
        limit = self.max_output - self.decoded
        try:
            if not self._stages and len(data) > limit:
                raise too_big(limit)
            for stage in self._stages:
                data = stage.feed(data, limit)
                if final:
                    data += stage.flush(limit - len(data))
        except CodecError as exc:
            self._failed = exc
            raise
        self.decoded += len(data)
        return data


# --- encoding --------------------------------------------------------------------


class _ZlibEncoder:
    def __init__(self, coding: str, level: int) -> None:
        self.c = zlib.compressobj(level, zlib.DEFLATED, 31 if coding == "gzip" else 15)

    def feed(self, data: bytes) -> bytes:
        return self.c.compress(data)

    def flush(self) -> bytes:
        return self.c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self.c.flush(zlib.Z_FINISH)


class _BrotliEncoder:
    def __init__(self, level: int) -> None:
        assert _brotli is not None
        self.c = _brotli.Compressor(quality=level)

    def feed(self, data: bytes) -> bytes:
        return self.c.process(data) if data else b""

    def flush(self) -> bytes:
        return self.c.flush()

    def finish(self) -> bytes:
        return self.c.finish()


class _ZstdEncoder:
    def __init__(self, level: int) -> None:
        assert _zstd is not None
        self.c = _zstd.ZstdCompressor(level=level, write_checksum=True).compressobj()

    def feed(self, data: bytes) -> bytes:
        return self.c.compress(data) if data else b""

    def flush(self) -> bytes:
        return self.c.flush(_zstd.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self.c.flush(_zstd.COMPRESSOBJ_FLUSH_FINISH)


class _Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class Encoder:
    """Encodes one body for the client.

    ``feed(chunk)`` may hold data back for a better ratio; ``flush()`` returns
    everything fed so far in decodable form (the stream stays open: use it when the
    rewriter has output the visitor should see now, such as the page head);
    ``finish()`` ends the stream.
    """

    def __init__(self, coding_list: list[str], *, levels: dict[str, int] | None = None) -> None:
        levels = {**LEVELS, **(levels or {})}
        self.codings = list(coding_list)
        self._stages: list[Any] = []
        for coding in coding_list:
            if coding in ("gzip", "deflate"):
                self._stages.append(_ZlibEncoder(coding, levels[coding]))
            elif coding == "br":
                self._stages.append(_BrotliEncoder(levels["br"]))
            else:
                self._stages.append(_ZstdEncoder(levels["zstd"]))
        if not self._stages:
            self._stages.append(_Identity())

    @classmethod
    def for_header(cls, content_encoding: str | None, **kw: Any) -> Encoder:
        return cls(codings(content_encoding), **kw)

    def feed(self, chunk: bytes) -> bytes:
        data = chunk
        for stage in self._stages:
            data = stage.feed(data)
        return data

    def flush(self) -> bytes:
        return self._end(lambda s: s.flush())

    def finish(self) -> bytes:
        return self._end(lambda s: s.finish())

    def _end(self, step: Callable[[Any], bytes]) -> bytes:
        data = b""
        for stage in self._stages:
            data = stage.feed(data) + step(stage)
        return data


# --- charsets --------------------------------------------------------------------

# Both searched in lowercased text (re.IGNORECASE made them several times slower).
_META = re.compile(rb"<meta\b[^>]*?\bcharset\s*=\s*[\"']?\s*([a-z0-9_.:-]+)")
_HEADER_CHARSET = re.compile(r";\s*charset\s*=\s*[\"']?([^\"';,\s]+)")

# The HTML standard decodes these labels as windows-1252, and UTF-16 labels in a
# <meta> as UTF-8 (a meta tag readable as ASCII cannot be UTF-16).
_WHATWG: Final = {"latin_1": "cp1252", "ascii": "cp1252", "iso8859_1": "cp1252"}


@functools.lru_cache(maxsize=256)
def _normalise(label: str, from_meta: bool = False) -> str | None:
    """The codec a charset label names; None for an unknown label and for a codec
    that is no charset a page can be in (``hex``, ``zlib``, ``idna``, ``undefined``:
    snippets could not be encoded to it), which browsers ignore too."""
    try:
        info = codecs.lookup(label.strip())
        "<&é>".encode(info.name, "xmlcharrefreplace")
    except (LookupError, UnicodeError):
        return None
    name = info.name
    name = _WHATWG.get(name.replace("-", "_"), name)
    if from_meta and name.startswith("utf-16"):
        return "utf-8"
    return name


@functools.lru_cache(maxsize=256)
def _header_charset(content_type: str) -> str | None:
    """The codec a ``Content-Type`` names, if any (a shop sends one or two kinds)."""
    m = _HEADER_CHARSET.search(content_type.lower())
    return _normalise(m.group(1)) if m else None


def charset_of(content_type: str | None, first_bytes: bytes = b"") -> str:
    """The page's charset as a Python codec name: a byte order mark, else the
    ``Content-Type`` header's ``charset``, else a ``<meta charset>`` or ``<meta
    http-equiv=content-type content="…; charset=…">`` in the first 1024 bytes, else
    ``utf-8``. Latin-1 and ASCII labels mean ``cp1252`` (windows-1252), as in browsers."""
    return (
        _bom_charset(first_bytes)
        or _header_charset(content_type or "")
        or _meta_charset(first_bytes)
    )


@functools.lru_cache(maxsize=64)
def _header_charset_raw(content_type: bytes) -> str | None:
    return _header_charset(content_type.decode("latin-1"))


def page_charset(content_type: bytes, first_bytes: bytes) -> str:
    """:func:`charset_of` for a ``Content-Type`` header's raw value, its answer for
    the header remembered (the body's first bytes are read only when it names none)."""
    return (
        _bom_charset(first_bytes) or _header_charset_raw(content_type) or _meta_charset(first_bytes)
    )


_BOMS: Final = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _bom_charset(first_bytes: bytes) -> str | None:
    """The charset a byte order mark says, if the body starts with one."""
    if first_bytes.startswith(_BOMS):
        return "utf-8" if first_bytes.startswith(codecs.BOM_UTF8) else "utf-16"
    return None


def _meta_charset(first_bytes: bytes) -> str:
    """A ``<meta>``'s charset in the first 1024 bytes, else ``utf-8``."""
    for m in _META.finditer(first_bytes[:1024].lower()):
        found = _normalise(m.group(1).decode("ascii", "replace"), from_meta=True)
        if found:
            return found
    return "utf-8"


def encode_text(html: str, charset: str) -> bytes:
    """Rendered HTML in the page's charset; characters it lacks become ``&#NNNN;``."""
    return html.encode(charset, "xmlcharrefreplace")
