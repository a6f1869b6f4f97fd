"""The layering rules, enforced on the source: every module's imports (``import x`` and
``from x import y``, at any depth, type-checking blocks included) are walked with ``ast``.

    shared/     imports nothing of MonitorX but shared/
    engine/     shared/ and itself
    ingestor/, dispatcher/, workers/, alerter/   engine/, shared/ and themselves (never each other)
    simulator/  shared/ and itself (a stand-in for Galio knows nothing of MonitorX's insides)
    monitorx/   anything (the command line, the demo, the benchmarks and the backtest)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "engine", "ingestor", "dispatcher", "workers", "alerter", "simulator", "monitorx")
PROCESS_ALLOWED = frozenset({"engine", "shared"})
ALLOWED: dict[str, frozenset[str]] = {
    "shared": frozenset(),
    "engine": frozenset({"shared"}),
    "ingestor": PROCESS_ALLOWED,
    "dispatcher": PROCESS_ALLOWED,
    "workers": PROCESS_ALLOWED,
    "alerter": PROCESS_ALLOWED,
    "simulator": frozenset({"shared"}),
    "monitorx": frozenset(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    """The top-level MonitorX packages a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def violations() -> list[str]:
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for other in sorted(imported_packages(path) - ALLOWED[package] - {package}):
                wrong.append(f"{path.relative_to(ROOT)} imports {other}")
    return wrong


def test_every_package_imports_only_what_its_layer_may() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("package", "source", "wrong"),
    [
        ("dispatcher", "from workers.worker import make_queue\n", "workers"),
        ("shared", "import engine.plan\n", "engine"),
        ("engine", "def f() -> None:\n    from alerter import sinks\n", "alerter"),
    ],
)
def test_the_rule_catches_a_forbidden_import(tmp_path: Path, package: str, source: str, wrong: str) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert wrong in imported_packages(module) - ALLOWED[package] - {package}
