"""Build step: the merchant-facing directories at the top of the repository
(``rules/``, ``snippets/``, ``static/``) are copied into the package as
``edge/shipped/`` (see ``edge/shipped.py``), so a wheel is self-contained. Everything
else about the package is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("rules", "snippets", "static")


class BuildWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the source tree's directories
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            source = root / name
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing (a broken sdist?)")
            target = Path(self.build_lib) / "edge" / "shipped" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target)


setup(cmdclass={"build_py": BuildWithShipped})
