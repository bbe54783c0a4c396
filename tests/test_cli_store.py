"""The commands and the ``store`` setting: read-only commands never make a store, a
failed import leaves none behind, a wrong ``--store`` is one line naming the setting
and the fix (exit 2), an unreachable Redis one line, not a traceback; and the
commands work on Redis (a real redis-server) as on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = str(ROOT / "rules")
ORDERS = "order_id,user_id,date,total\nA1,c1,2024-06-01,40.5\nA2,c2,2024-06-02,12\n"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without edge.toml, the secret set, no store named."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_STORE", raising=False)
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    monkeypatch.setenv("EDGE_SECRET", "test-secret")
    return tmp_path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


READ_ONLY = [
    ["segments", "--rules", RULES],
    ["explain", "cust:c1", "--rules", RULES],
    ["forget", "cust:c1"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
def test_read_only_commands_never_make_a_store(
    here: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    typo = here / "profile.db"  # the sidecar's is profiles.db
    assert main([*command, "--store", f"sqlite:{typo}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"store: sqlite:{typo}: no store there" in line and "--store/EDGE_STORE" in line
    assert main(command) == 2  # the default store, never written here
    assert "edge-data/profiles.db" in one_line(capsys.readouterr().err)
    missing_dir = here / "nowhere" / "profiles.db"
    assert main([*command, "--store", f"sqlite:{missing_dir}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"no directory {missing_dir.parent}" in line and "--store/EDGE_STORE" in line
    assert sorted(p.name for p in here.iterdir()) == []


@pytest.mark.parametrize("command", [*READ_ONLY, ["import", "orders.csv"]], ids=lambda c: c[0])
def test_an_unknown_store_scheme_is_one_line(
    here: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    (here / "orders.csv").write_text(ORDERS)
    assert main([*command, "--store", "sqlit:profiles.db"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("edge: command line: store: expected sqlite:PATH, redis://")
    assert "'sqlit:profiles.db'" in line
    monkeypatch.setenv("EDGE_STORE", "postgres://db/edge")
    assert main(command) == 2
    assert "store (EDGE_STORE): expected sqlite:PATH" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in here.iterdir()) == ["orders.csv"]


def test_a_failed_import_leaves_no_store_behind(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", f"sqlite:{here / 'profiles.db'}", "--no-progress"]
    assert main(["import", "missing.csv", *store]) == 2
    assert "missing.csv: no such file" in one_line(capsys.readouterr().err)
    (here / "data.csv").write_text("a,b\n1,2\n")  # no kind to be found
    assert main(["import", "data.csv", *store]) == 2
    assert "pass --kind" in capsys.readouterr().err
    (here / "orders.csv").write_text(ORDERS + "A3,c3,yesterday,1\n")
    assert main(["import", "orders.csv", "--strict", *store]) == 1  # nothing applied
    assert "nothing applied" in capsys.readouterr().out
    assert sorted(p.name for p in here.iterdir()) == ["data.csv", "orders.csv"]
    assert main(["import", "orders.csv", *store]) == 1  # the good lines: now there is one
    assert "2 orders" in capsys.readouterr().out
    assert (here / "profiles.db").is_file()
    nowhere = here / "nowhere" / "profiles.db"
    assert main(["import", "orders.csv", "--store", f"sqlite:{nowhere}"]) == 2
    assert f"no directory {nowhere.parent}" in one_line(capsys.readouterr().err)
    assert not nowhere.parent.exists()
    # and the store made by the import is the one the read-only commands read
    assert main(["segments", "--rules", RULES, "--store", f"sqlite:{here / 'profiles.db'}"]) == 0
    assert "2 stored profiles" in capsys.readouterr().out


@pytest.mark.parametrize("command", [*READ_ONLY, ["import", "orders.csv"]], ids=lambda c: c[0])
def test_an_unreachable_redis_is_one_line(
    here: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    (here / "orders.csv").write_text(ORDERS)
    port = free_port()  # nothing listens there
    assert main([*command, "--store", f"redis://127.0.0.1:{port}/0"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"edge: cannot reach redis at 127.0.0.1:{port}: connection refused — "
        "is redis-server running? set --store/EDGE_STORE"
    )


def test_an_unreachable_redis_from_the_shell(here: Path) -> None:
    """The real command: stderr is the one line, exit status 2."""
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "edge", "segments", "--store", f"redis://127.0.0.1:{port}/0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=here,
    )
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"edge: cannot reach redis at 127.0.0.1:{port}")


@pytest.mark.slow
def test_import_segments_explain_forget_on_redis(
    here: Path, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own
    redis.Redis.from_url(url).flushdb()
    store = ["--store", url]
    (here / "orders.csv").write_text(ORDERS)
    assert main(["import", "orders.csv", "--no-progress", *store]) == 0
    assert "2 orders" in capsys.readouterr().out
    assert main(["import", "orders.csv", "--no-progress", *store]) == 0
    assert "2 duplicates skipped" in capsys.readouterr().out
    assert main(["segments", "--rules", RULES, *store]) == 0
    assert f"2 stored profiles ({url})" in capsys.readouterr().out
    assert main(["explain", "cust:c1", "--rules", RULES, *store]) == 0
    assert "orders_within(" in capsys.readouterr().out
    assert main(["forget", "cust:c1", *store]) == 0
    assert main(["explain", "cust:c1", "--rules", RULES, *store]) == 1
    assert sorted(p.name for p in here.iterdir()) == ["orders.csv"]


@pytest.mark.slow
def test_redis_gone_in_the_middle_of_an_import_is_one_line(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file read, Redis dies before the writes: one line, exit 2; the import run
    again once Redis is back writes everything, once."""
    from edge.importer.bulk import Bulk
    from tests.redis_server import RedisServer, require_redis_server

    server = RedisServer(require_redis_server(), here).start()
    try:
        write = Bulk.write

        def redis_dies_first(self: Bulk, **kw: object) -> None:
            server.kill()
            write(self, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(Bulk, "write", redis_dies_first)
        (here / "orders.csv").write_text(ORDERS)
        store = ["--store", server.url, "--no-progress"]
        assert main(["import", "orders.csv", *store]) == 2
        assert one_line(capsys.readouterr().err) == (
            f"edge: cannot reach redis at 127.0.0.1:{server.port}: connection refused — "
            "is redis-server running? set --store/EDGE_STORE"
        )
        monkeypatch.setattr(Bulk, "write", write)
        server.start()
        assert main(["import", "orders.csv", *store]) == 0
        assert "2 orders" in capsys.readouterr().out
    finally:
        server.stop()
