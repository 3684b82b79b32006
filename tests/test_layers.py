"""The layer contract: dependency arrows point down only (docs/architecture.md).

The contracts live in pyproject.toml (``[tool.importlinter]``) and are
checked by import-linter, whose graph (grimp) counts every import
statement: at module level, inside functions and under ``TYPE_CHECKING``.
The first test checks the package as it is; the others copy it, inject one
forbidden import and check that the same contracts report it, so the first
test cannot pass by checking nothing.  The last checks that the layer picture
of docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import chronik

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PACKAGE = Path(chronik.__file__).resolve().parent

LINT = (
    "import sys\n"
    "from importlinter.cli import lint_imports\n"
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))\n"
)


def check_contracts(source_root: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's import contracts on the ``chronik`` package found in ``source_root``."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([sys.executable, "-c", LINT, str(PYPROJECT)], cwd=source_root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_import_contracts() -> None:
    result = check_contracts(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " kept, 0 broken." in result.stdout, result.stdout


def test_the_layers_put_the_broker_assembly_above_every_part_it_assembles() -> None:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    flat = [[name.strip() for name in layer.split("|")] for layer in layers]
    rank = {name: depth for depth, layer in enumerate(flat) for name in layer}
    for part in ("chronik.server", "chronik.handlers", "chronik.cluster", "chronik.groups", "chronik.log",
                 "chronik.metadata", "chronik.storage", "chronik.protocol", "chronik.config"):
        assert rank["chronik.broker"] < rank[part], part
    # every subpackage and module of chronik is in some layer
    top_level = {f"chronik.{p.stem}" for p in PACKAGE.iterdir()
                 if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert top_level <= set(rank), top_level - set(rank)


def inject(tmp_path: Path, module: str, code: str) -> Path:
    """A copy of the package with ``code`` appended to ``module`` (a path inside it); returns the copy's root."""
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "chronik", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    target = root / "chronik" / module
    target.write_text(target.read_text() + "\n\n" + code)
    return root


FUNCTION_LEVEL = "def _injected() -> object:\n    from ..broker import open_broker\n\n    return open_broker\n"
TYPE_CHECKING_ONLY = "import typing as _typing\n\nif _typing.TYPE_CHECKING:\n    from chronik.broker import Broker\n"


@pytest.mark.parametrize("module, code, importer", [
    ("handlers/fetch.py", FUNCTION_LEVEL, "chronik.handlers.fetch"),
    ("cluster/replication.py", TYPE_CHECKING_ONLY, "chronik.cluster.replication"),
    ("cluster/liveness.py", "from .. import broker\n", "chronik.cluster.liveness"),
    ("server/kafka.py", FUNCTION_LEVEL, "chronik.server.kafka"),
])
def test_a_part_importing_the_broker_breaks_the_layers(tmp_path: Path, module: str, code: str, importer: str) -> None:
    result = check_contracts(inject(tmp_path, module, code))
    assert result.returncode != 0
    assert "layers: dependency arrows point down only BROKEN" in result.stdout, result.stdout
    assert f"{importer} -> chronik.broker" in result.stdout, result.stdout


def test_a_cycle_inside_a_package_breaks_the_contract(tmp_path: Path) -> None:
    # chronik.cluster.node imports .raft; raft importing .node back closes a cycle
    back = "def _injected() -> object:\n    from .node import open_raft_node\n\n    return open_raft_node\n"
    result = check_contracts(inject(tmp_path, "cluster/raft.py", back))
    assert result.returncode != 0
    assert "no import cycles between the modules of a package BROKEN" in result.stdout, result.stdout


def test_the_protocol_codec_must_not_import_trio(tmp_path: Path) -> None:
    result = check_contracts(inject(tmp_path, "protocol/framing.py", "def _injected() -> None:\n    import trio\n"))
    assert result.returncode != 0
    assert "the protocol codec is sans-I/O: no trio, no storage BROKEN" in result.stdout, result.stdout


ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
_DRAWN = re.compile(r"(?:^|\| )chronik/([a-z_]+)(?:/|\.py)")


def drawn_layers() -> list[set[str]]:
    """The layer picture of docs/architecture.md, top down: a line that starts with a
    module opens a layer; a module after ``| `` is a sibling in the current one."""
    picture = ARCHITECTURE.read_text().split("## Layers\n", 1)[1].split("```\n", 2)[1]
    layers: list[set[str]] = []
    for line in picture.splitlines():
        for match in _DRAWN.finditer(line):
            name = f"chronik.{match.group(1)}"
            if match.start() == 0:
                layers.append({name})
            else:
                layers[-1].add(name)
    return layers


def test_the_architecture_guide_draws_the_layers_of_the_contract() -> None:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    assert drawn_layers() == [{name.strip() for name in layer.split("|")} for layer in layers]
