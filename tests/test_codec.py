from __future__ import annotations

import gzip
import itertools
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.codec import (
    CodecError,
    Decoder,
    Encoder,
    UnsupportedCoding,
    charset_of,
    codings,
    encode_text,
    supported,
)
from edge.headers import weighted
from tests._hypothesis import examples

try:
    import zstandard as zstd
except ImportError:  # optional: the zstd cases are skipped without it
    zstd = None

needs_zstd = pytest.mark.skipif(zstd is None, reason="zstandard not installed")


def _codings(*names: str) -> list[object]:
    return [pytest.param(n, marks=needs_zstd) if n == "zstd" else n for n in names]


PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Bottega</title></head><body>"
    + "".join(f"<li data-product-id=p{i}>Scarpa è bella {i}</li>" for i in range(300))
    + "</body></html>"
).encode()

SMALL = b"<p>ciao \xc3\xa8 mondo</p>" * 3


def compress(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "raw-deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if coding == "br":
        return brotli.compress(data)
    if coding == "zstd":  # corruption is only detectable with the frame checksum
        return zstd.ZstdCompressor(write_checksum=True).compress(data)
    raise AssertionError(coding)


def header(coding: str) -> str:
    return "deflate" if coding == "raw-deflate" else coding


def decode_in(decoder: Decoder, chunks: list[bytes]) -> bytes:
    return b"".join(decoder.feed(c) for c in chunks) + decoder.flush()


CODINGS = _codings("gzip", "deflate", "raw-deflate", "br", "zstd")


@pytest.mark.parametrize("coding", CODINGS)
def test_decode_every_split_point(coding: str) -> None:
    body = compress(coding, SMALL)
    for cut in range(len(body) + 1):
        d = Decoder.for_header(header(coding))
        assert decode_in(d, [body[:cut], body[cut:]]) == SMALL, cut
    d = Decoder.for_header(header(coding))
    assert decode_in(d, [body[i : i + 1] for i in range(len(body))]) == SMALL


@pytest.mark.parametrize("coding", _codings("gzip", "deflate", "br", "zstd"))
def test_encode_decode_round_trip_with_flushes(coding: str) -> None:
    enc = Encoder.for_header(coding)
    out = []
    for i in range(0, len(PAGE), 1000):
        out.append(enc.feed(PAGE[i : i + 1000]))
        if i == 0:
            # After a flush the client can already decode the head of the page.
            head = b"".join(out) + enc.flush()
            out = [head]
            partial = Decoder.for_header(coding).feed(head)
            assert partial == PAGE[:1000]
    out.append(enc.finish())
    body = b"".join(out)
    assert len(body) < len(PAGE) / 4
    assert decode_in(Decoder.for_header(coding), [body]) == PAGE


def test_standard_tools_read_what_we_encode() -> None:
    for coding, read in (
        ("gzip", gzip.decompress),
        ("deflate", zlib.decompress),
        ("br", brotli.decompress),
    ):
        enc = Encoder.for_header(coding)
        assert read(enc.feed(PAGE) + enc.flush() + enc.finish()) == PAGE


def test_stacked_codings_round_trip() -> None:
    body = brotli.compress(gzip.compress(SMALL))  # "gzip, br": gzip applied first
    assert decode_in(Decoder.for_header("gzip, br"), [body[:5], body[5:]]) == SMALL
    enc = Encoder.for_header("gzip, br")
    encoded = enc.feed(SMALL) + enc.flush() + enc.feed(SMALL) + enc.finish()
    assert gzip.decompress(brotli.decompress(encoded)) == SMALL * 2


def test_gzip_members_and_padding() -> None:
    body = gzip.compress(b"one ") + gzip.compress(b"two") + b"\0\0"
    for cut in range(len(body) + 1):
        assert decode_in(Decoder.for_header("x-gzip"), [body[:cut], body[cut:]]) == b"one two"


def test_identity_and_empty() -> None:
    d = Decoder.for_header(None)
    assert d.identity and decode_in(d, [b"abc", b"def"]) == b"abcdef"
    assert decode_in(Decoder.for_header("identity"), [b"x"]) == b"x"
    assert decode_in(Decoder.for_header("gzip"), []) == b""
    e = Encoder.for_header("")
    assert e.feed(b"x") + e.flush() + e.finish() == b"x"


@pytest.mark.parametrize("coding", _codings("gzip", "deflate", "br", "zstd"))
def test_corrupt_input_raises(coding: str) -> None:
    body = bytearray(compress(coding, PAGE))
    body[len(body) // 2] ^= 0xFF
    body[len(body) // 2 + 1] ^= 0x55
    with pytest.raises(CodecError):
        decode_in(Decoder.for_header(coding), [bytes(body)])


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_truncated_input_raises(coding: str) -> None:
    body = compress(coding, PAGE)
    d = Decoder.for_header(coding)
    d.feed(body[: len(body) - 5])
    with pytest.raises(CodecError, match="truncated"):
        d.flush()


def test_garbage_is_not_gzip() -> None:
    with pytest.raises(CodecError):
        decode_in(Decoder.for_header("gzip"), [b"<html>not compressed</html>"])


def test_error_is_sticky() -> None:
    d = Decoder.for_header("gzip")
    with pytest.raises(CodecError):
        d.feed(b"garbage, not gzip at all")
    with pytest.raises(CodecError):
        d.feed(gzip.compress(b"ok"))


@pytest.mark.parametrize("coding", _codings("gzip", "deflate", "br", "zstd"))
def test_decompression_bomb_is_stopped(coding: str) -> None:
    zeros = b"\0" * (64 << 20)  # 64 MiB of zeros in a few KiB, compressed fast
    bomb = {
        "gzip": lambda: gzip.compress(zeros, 1),
        "deflate": lambda: zlib.compress(zeros, 1),
        "br": lambda: brotli.compress(zeros, quality=1),
        "zstd": lambda: zstd.ZstdCompressor(level=1).compress(zeros),
    }[coding]()
    assert len(bomb) < 1 << 20
    d = Decoder.for_header(coding, max_output=1 << 20)
    with pytest.raises(CodecError, match="limit"):
        for i in range(0, len(bomb), 4096):
            out = d.feed(bomb[i : i + 4096])
            assert len(out) <= 1 << 20
        d.flush()


def test_limit_counts_whole_body_and_exact_fit_passes() -> None:
    body = gzip.compress(SMALL)
    assert decode_in(Decoder.for_header("gzip", max_output=len(SMALL)), [body]) == SMALL
    with pytest.raises(CodecError):
        decode_in(Decoder.for_header("gzip", max_output=len(SMALL) - 1), [body])
    with pytest.raises(CodecError):
        decode_in(Decoder.for_header(None, max_output=3), [b"ab", b"cd"])


def test_unsupported_codings() -> None:
    assert not supported("compress")
    assert not supported("gzip, exi")
    assert supported("gzip, br") and supported("") and supported(None)
    with pytest.raises(UnsupportedCoding):
        Decoder.for_header("compress")
    assert codings("X-GZIP, identity,br") == ["gzip", "br"]


def test_weighted_lists() -> None:
    assert weighted(" br;q=0.5 , GZIP,, *;q=0 ") == [("br", 0.5), ("gzip", 1.0), ("*", 0.0)]
    assert weighted("it-CH;level=1;q=0.9, en;q=abc, fr;q=") == [
        ("it-ch", 0.9),
        ("en", None),
        ("fr", None),
    ]
    assert weighted(None) == weighted("") == []


@settings(max_examples=examples(60), deadline=None)
@given(
    data=st.binary(max_size=3000),
    coding=st.sampled_from(["gzip", "deflate", "br", *(["zstd"] if zstd else [])]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6),
)
def test_round_trip_any_chunking(data: bytes, coding: str, cuts: list[int]) -> None:
    enc = Encoder.for_header(coding)
    body = enc.feed(data) + enc.finish()
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)]
    assert decode_in(Decoder.for_header(coding), chunks) == data


# --- charsets ---


@pytest.mark.parametrize(
    ("content_type", "head", "expected"),
    [
        ("text/html; charset=UTF-8", b"", "utf-8"),
        ('text/html; charset="iso-8859-1"', b"", "cp1252"),
        ("text/html;charset=latin1", b"", "cp1252"),
        ("text/html; charset=us-ascii", b"", "cp1252"),
        ("text/html; charset=shift_jis", b"", "shift_jis"),
        ("text/html; charset=nonsense", b"<meta charset=windows-1250>", "cp1250"),
        ("text/html", b"<html><head><meta charset='ISO-8859-15'>", "iso8859-15"),
        (
            None,
            b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">',
            "cp1252",
        ),
        (None, b"<meta charset=utf-16>", "utf-8"),
        ("text/html", b"<p>no meta</p>", "utf-8"),
        ("text/html; charset=iso-8859-1", b"\xef\xbb\xbf<p>bom wins</p>", "utf-8"),
        (None, b" " * 1100 + b"<meta charset=cp1250>", "utf-8"),
        ("Text/HTML; CHARSET=Windows-1250", b"", "cp1250"),
        (
            None,
            b'<HTML><HEAD><META HTTP-EQUIV="Content-Type" CONTENT="text/html; CHARSET=KOI8-R">',
            "koi8-r",
        ),
    ],
)
def test_charset_of(content_type: str | None, head: bytes, expected: str) -> None:
    assert charset_of(content_type, head) == expected


def test_encode_text_in_page_charset() -> None:
    assert encode_text("Ciao Zoë € 😀", "cp1252") == b"Ciao Zo\xeb \x80 &#128512;"
    assert encode_text("€", "iso8859-15") == b"\xa4"
    assert encode_text("日本", "cp1252") == b"&#26085;&#26412;"
