"""Preview links: signed, expiring, unforgeable."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.identity import Identity
from edge.preview import make_token, preview_link, read_token
from edge.request import RequestHead

NOW = 1_790_000_000
IDENTITY = Identity(["current", "previous"])


def test_a_token_grants_its_segments_until_it_expires() -> None:
    token = make_token(IDENTITY, ["vip", "lapsed", "vip"], 3600, now=NOW)
    preview = read_token(IDENTITY, token, now=NOW + 3599)
    assert preview is not None and preview.segments == {"vip", "lapsed"}
    assert read_token(IDENTITY, token, now=NOW + 3601) is None


def test_rotated_secrets_still_verify_and_others_do_not() -> None:
    token = make_token(Identity(["previous"]), ["vip"], 60, now=NOW)
    assert read_token(IDENTITY, token, now=NOW) is not None
    assert read_token(Identity(["someone-else"]), token, now=NOW) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # tag changed
        lambda t: "W1sidmlwIl0sOTk5OTk5OTk5OV0" + t[t.index(".") :],  # claims swapped
        lambda t: t.replace(".", ""),
        lambda t: "",
        lambda t: "." * 5000,
    ],
)
def test_forged_or_malformed_tokens_grant_nothing(mangle: object) -> None:
    token = make_token(IDENTITY, ["vip"], 60, now=NOW)
    assert read_token(IDENTITY, mangle(token), now=NOW) is None  # type: ignore[operator]


def test_bad_requests_for_a_token_are_errors() -> None:
    with pytest.raises(ValueError, match="segment name"):
        make_token(IDENTITY, ["vip<script>"], 60)
    with pytest.raises(ValueError, match="7 days"):
        make_token(IDENTITY, ["vip"], 30 * 86_400)


def test_link_and_stripping() -> None:
    link = preview_link("https://shop.example/", "/c/donna?page=2&edge_preview=old", "TOK")
    assert link == "https://shop.example/c/donna?page=2&edge_preview=TOK"
    head = RequestHead("GET", "/c/donna", query=b"page=2&edge_preview=TOK")
    assert head.without_param(b"edge_preview") == b"TOK"
    assert head.query == b"page=2" and head.target == b"/c/donna?page=2"
    assert head.without_param(b"edge_preview") is None and head.query == b"page=2"


def test_cli_prints_a_link_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    from edge.cli import main

    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    monkeypatch.setenv("EDGE_SECRET", "current")
    monkeypatch.setenv("EDGE_PUBLIC_URL", "https://shop.example")
    assert main(["preview-link", "--segment", "vip", "--ttl", "2h", "/"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith("https://shop.example/?edge_preview=")
    preview = read_token(IDENTITY, link.split("=", 1)[1])
    assert preview is not None and preview.segments == {"vip"}
    assert main(["preview-link", "--segment", "vip", "--ttl", "forever", "/"]) == 2
    assert "--ttl" in capsys.readouterr().err


def test_cli_refuses_unknown_segments_and_links_where_the_sidecar_listens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from edge.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("EDGE_PUBLIC_URL", "EDGE_PORT", "EDGE_HOST", "EDGE_CONFIG", "EDGE_RULES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDGE_SECRET", "current")
    monkeypatch.setenv("EDGE_RULES", str(Path(__file__).resolve().parent.parent / "rules"))

    # a misspelt segment would preview nothing: refused, with the closest name
    assert main(["preview-link", "--segment", "vip", "--segment", "lapsd", "/"]) == 2
    err = capsys.readouterr().err
    assert "unknown segment `lapsd`" in err and "did you mean `lapsed`?" in err

    def link(*flags: str) -> str:
        assert main(["preview-link", "--segment", "vip", *flags, "/"]) == 0
        return capsys.readouterr().out.strip()

    # the port the sidecar was configured with, by edge.toml, the environment or a flag
    (tmp_path / "edge.toml").write_text("port = 9400\n", encoding="utf-8")
    assert link().startswith("http://127.0.0.1:9400/?edge_preview=")
    monkeypatch.setenv("EDGE_PORT", "9123")
    assert link().startswith("http://127.0.0.1:9123/?edge_preview=")
    assert link("--host", "0.0.0.0", "--port", "9300").startswith("http://127.0.0.1:9300/?")
    # the shop's public address wins: it is where visitors reach the sidecar
    monkeypatch.setenv("EDGE_PUBLIC_URL", "https://shop.example")
    assert link("--port", "9300").startswith("https://shop.example/?edge_preview=")
