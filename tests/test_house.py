"""The house: the request path on top, pure logic at the bottom, arrows pointing down.

Each layer below imports only from the layers under it (README, "Project layout").
Read from the source with ``ast``: module-level imports and the ones inside functions
alike, so a lazy import cannot hide an arrow pointing up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edge"

LAYERS: list[tuple[str, ...]] = [
    (
        "edge.cli",
        "edge.rules_cli",
        "edge.map_cli",
        "edge.store_cli",
        "edge.activation_cli",
        "edge.__main__",
    ),
    ("edge.app", "edge.server", "edge.demo"),
    ("edge.http1",),  # the HTTP/1.1 protocol under the app (edge.server runs it)
    ("edge.respond", "edge.passthrough", "edge.ingest", "edge.admin", "edge.browser"),
    ("edge.report",),  # the merchant's report (edge report, /_edge/admin, report.json)
    ("edge.decide",),
    ("edge.activities",),
    ("edge.placements",),
    ("edge.rewriting",),
    ("edge.proxy",),
    ("edge.upstream",),
    ("edge.recorder", "edge.snapshots"),  # snapshots: segment counts (app, edge segments)
    ("edge.fitting",),  # edge map's pure half: reads pages as the request path does
    ("edge.visitors", "edge.observe", "edge.preview", "edge.reading"),
    ("edge.request", "edge.forms", "edge.carts"),
    (
        "edge.personalize",
        "edge.rules",
        "edge.rewrite",
        "edge.profiles",
        "edge.importer",
        "edge.activation",  # may use rules and profiles; profiles never import it
    ),
    (
        "edge.identity",
        "edge.pages",
        "edge.languages",
        "edge.config",
        "edge.codec",
        "edge.headers",
        "edge.caches",
        "edge.shipped",
        "edge.lift",
        "edge.logs",  # the access log, request ids, one-line error logs: any layer logs
    ),
    ("edge.metrics",),  # what is counted: any layer counts (imports nothing of ours)
    ("edge",),  # the package's own __init__ (its version)
]
"""Top first. Within the packages' layer, packages may use each other, without cycles."""


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    best = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), index))
    assert best[1] >= 0, f"{module} is in no layer of tests/test_house.py: place it"
    return best[1]


def _group(module: str) -> str:
    """The package (or module) a module belongs to, for arrows inside a layer."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(module: str) -> set[str]:
    """The modules of ours that *module* imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            subs = [f"{base}.{alias.name}" for alias in node.names]
            names = subs if all(s in MODULES for s in subs) else [base]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_arrows_point_down(module: str) -> None:
    mine = _layer(module)
    for used in GRAPH[module]:
        theirs = _layer(used)
        same_group = _group(used) == _group(module)
        assert theirs > mine or (theirs == mine and not same_group) or same_group, (
            f"{module} (layer {mine}) imports {used} (layer {theirs}): an arrow pointing up"
        )


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for used in sorted(GRAPH[module]):
            if state.get(used) == 1:
                cycle = [*path[path.index(used) :], used] if used in path else [module, used]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if used not in state:
                visit(used, [*path, used])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_proxy_knows_nothing_of_personalization() -> None:
    forbidden = ("edge.rules", "edge.personalize", "edge.profiles", "edge.rewrite")
    used = GRAPH["edge.proxy"] | GRAPH["edge.upstream"]
    assert not [m for m in used if m.startswith(forbidden)], used
