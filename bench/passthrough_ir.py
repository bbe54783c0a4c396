"""Instructions per passthrough request of a real ``edge serve``, the whole process
(protocol, event loop, upstream client: what ``bench/instructions.py``'s in-process
rows cannot see), under callgrind.

    .venv/bin/python bench/passthrough_ir.py                      # this tree
    .venv/bin/python bench/passthrough_ir.py --compare /work/main  # that tree, then this

The sidecar runs with tracking off and no rules (goal G4's passthrough) in front of
this script's origin (a fixed page with Content-Length, keep-alive); one keep-alive
client sends ``--warmup`` requests, the counters are zeroed (``callgrind_control -z``),
then ``--requests`` more, and the counters are dumped: the table gives the
instructions per counted request. One run at a time: valgrind is slow, the machine
shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _origin(page: bytes) -> tuple[int, asyncio.AbstractEventLoop]:
    """A keep-alive origin answering every request with *page* (in a thread)."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"
    head += b"cache-control: max-age=60\r\ncontent-length: %d\r\n\r\n" % len(page)
    answer = head + page
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main() -> None:
        await asyncio.start_server(handle, sock=sock)

    loop.run_until_complete(main())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return sock.getsockname()[1], loop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _requests(port: int, count: int, path: str) -> None:
    """*count* GETs on one keep-alive connection, each read whole."""
    request = f"GET {path} HTTP/1.1\r\nHost: shop.test\r\nAccept: text/html\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        buffer = b""
        for _ in range(count):
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(262144)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head[:200]
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(buffer) < length:
                buffer += sock.recv(262144)
            buffer = buffer[length:]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"edge serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("edge serve did not start listening")


def measure(tree: Path, upstream: int, args: argparse.Namespace) -> float:
    """Instructions per counted request of ``edge serve`` from *tree*."""
    work = Path(tempfile.mkdtemp(prefix="edge-passthrough-ir-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(
        PYTHONPATH=str(tree),
        EDGE_STORE=f"sqlite:{work}/profiles.db",
        EDGE_SECRET="bench-secret",
        EDGE_TRACK="false",
        EDGE_RULES=str(work / "rules"),
        EDGE_ACCESS_LOG=args.access_log,
        EDGE_ACCESS_LOG_FILE=str(work / "access.log"),
    )
    (work / "rules").mkdir()
    out = work / "callgrind.out"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}.%p",
            sys.executable,
            "-m",
            "edge",
            "serve",
            "--upstream",
            f"http://127.0.0.1:{upstream}",
            "--port",
            str(port),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(port, proc)
        _requests(port, args.warmup, args.path)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        _requests(port, args.requests, args.path)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    dumps = sorted(work.glob("callgrind.out.*.1"))
    if not dumps:
        raise SystemExit(f"no callgrind dump in {work}")
    text = dumps[0].read_text(errors="replace")
    total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    assert total is not None, dumps[0]
    return int(total[1]) / args.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="another tree, measured first")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--page-kb", type=int, default=32)
    parser.add_argument("--path", default="/")
    parser.add_argument("--access-log", default="off", choices=("off", "text", "json"))
    args = parser.parse_args()
    page = (b"<!doctype html><p>" + b"x" * 1024 + b"</p>\n") * args.page_kb
    upstream, _loop = _origin(page)
    trees = [args.compare, ROOT] if args.compare else [ROOT]
    rows = [(str(tree), measure(tree, upstream, args)) for tree in trees]
    print(f"| tree | Ir/request ({args.page_kb} KB page, access log {args.access_log}) |")
    print("|---|---|")
    for tree, ir in rows:
        print(f"| {tree} | {ir:,.0f} |")
    if len(rows) == 2:
        print(f"| change | {rows[1][1] / rows[0][1] - 1:+.1%} |")


if __name__ == "__main__":
    main()
