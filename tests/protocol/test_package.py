"""The protocol core is sans-I/O: it must not pull in trio or os."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import chronik.protocol

PACKAGE = pathlib.Path(chronik.protocol.__file__).parent


def test_no_module_imports_trio_or_os() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("trio", "os"), f"{path.name} imports {name}"


def test_importing_the_package_does_not_import_trio() -> None:
    # kio imports hypothesis when it is installed (to register strategies for its
    # types), and hypothesis loads trio's plugin; a broker install has no
    # hypothesis, which the child process reproduces.
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import chronik.protocol\n"
        "loaded = sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent.parent)
