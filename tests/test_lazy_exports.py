"""Packages whose ``__init__`` exports names lazily (PEP 562 ``__getattr__``).

``chronik.protocol`` (its kio-based parts) and ``chronik.log`` load some of
their exported names at first use, so the log cleaner's child process
(``python -m chronik.log.cleaner_process``) starts without importing kio or
the log manager.  Checked here: every exported name resolves to the object
of the module it comes from, the lazy table and the ``TYPE_CHECKING``
imports (what type checkers and import-linter see) name the same things,
and the child's imports stay small.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

LAZY_PACKAGES = ["chronik.protocol", "chronik.log"]


def _type_checking_imports(package: str) -> dict[str, str]:
    """name -> ``.module`` of the ``from .module import name`` statements under ``if TYPE_CHECKING:``."""
    source = Path(importlib.import_module(package).__file__ or "").read_text()
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1, ast.dump(statement)
                for alias in statement.names:
                    found[alias.asname or alias.name] = f".{statement.module}"
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_the_lazy_table_matches_the_type_checking_imports(package: str) -> None:
    module = importlib.import_module(package)
    assert module._LAZY_NAMES == _type_checking_imports(package)
    assert set(module._LAZY_NAMES) <= set(module.__all__)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_to_its_modules_object(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        source = module._LAZY_NAMES.get(name)
        if source is not None:
            assert value is getattr(importlib.import_module(source, package), name), name
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")
    with pytest.raises(ImportError):
        exec(f"from {package} import no_such_name", {})


def test_the_cleaner_process_starts_without_kio_or_the_log_manager() -> None:
    code = (
        "import sys\n"
        "import chronik.log.cleaner_process\n"
        "heavy = [m for m in ('kio', 'hypothesis', 'chronik.log.manager', 'chronik.metadata') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from chronik.protocol import decode_request\n"  # and they still load on demand
        "from chronik.log import LogManager\n"
        "assert 'kio' in sys.modules and 'chronik.log.manager' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
