"""Configuration: defaults, edge.toml, EDGE_* and flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.app import observer_for
from edge.config import ConfigError, load_config


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text('upstream = "http://shop:8080"\nport = 9000\nread_timeout = 12\n')
    env = {"EDGE_PORT": "9100", "EDGE_PREVIOUS_SECRETS": "old1, old2", "EDGE_TRACK": "false"}
    config = load_config({"port": 9200, "host": None}, config_file=toml, environ=env)
    assert config.upstream == "http://shop:8080"
    assert config.read_timeout == 12
    assert config.port == 9200  # the flag wins
    assert config.previous_secrets == ["old1", "old2"]
    assert config.track is False
    assert config.host == "127.0.0.1"  # a flag not given does not override
    assert load_config(config_file=toml, environ=env).port == 9100


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('upstrem = "http://x"', "unknown key 'upstrem'"),
        ("port = 'eighty'", "port: Expected `int`, got `str`"),
        ('upstream = "ftp://x"', "upstream must be an http:// or https:// URL"),
        ("read_timeout = -1", "read_timeout must be a positive number"),
        ('upstream = "http://x"\n[[cart_actions]]\npath = "/a"\naction = "buy"', "cart_actions"),
        ("port = ", "edge.toml"),
        (
            '[page_types]\nproduct = ["/p/{id}"]',
            r"`page_types`: .* \[page_types\] in rules/theme.toml",
        ),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(config_file=toml, environ={})


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"EDGE_PORT.*Expected `int`"):
        load_config(environ={"EDGE_PORT": "lots"})


def test_cart_forms_from_config(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text(
        '[[cart_actions]]\npath = "/carrello/aggiungi"\naction = "add"\nproduct_field = "id"\n'
    )
    config = load_config(config_file=toml, environ={})
    observer = observer_for(config)
    (added,) = observer.cart_events("POST", "/carrello/aggiungi", {"id": "p7", "qty": "3"})
    assert added.product_id == "p7" and added.quantity == 3


def test_replay_cache_size_is_checked() -> None:
    assert load_config(environ={"EDGE_REPLAY_CACHE_BYTES": "0"}).replay_cache_bytes == 0
    with pytest.raises(ConfigError, match="replay_cache_bytes"):
        load_config(environ={"EDGE_REPLAY_CACHE_BYTES": "-1"})
