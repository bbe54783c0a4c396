"""Start the Oscar test shop: tables and data once in a directory, then waitress on a
free port of 127.0.0.1. Subprocesses only: Django is configured once per process, and
the tests' own process stays free of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = "tests.shops.oscar.settings"
SETUP_TIMEOUT = 180.0  # seconds for creating the tables or loading the data


def shop_env(directory: Path) -> dict[str, str]:
    """The environment of every Oscar process: its settings and its data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        OSCAR_SHOP_DIR=str(directory),
        PYTHONPATH=str(ROOT),
        PYTHONWARNINGS="ignore",
    )
    return env


def prepare(directory: Path) -> None:
    """An Oscar database with the test shop's catalogue in *directory* (which must be
    empty): its tables, then the data and the search index."""
    directory.mkdir(parents=True, exist_ok=True)
    steps = (
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"],
        [sys.executable, "-m", "tests.shops.oscar.load"],
    )
    for argv in steps:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=shop_env(directory),
            capture_output=True,
            timeout=SETUP_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} failed:\n{done.stderr.decode()[-4000:]}")


def serve(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Oscar under waitress (a production WSGI server) on 127.0.0.1:*port*."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{port}",
            "--threads=8",
            "tests.shops.oscar.wsgi:application",
        ],
        cwd=ROOT,
        env=shop_env(directory),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
