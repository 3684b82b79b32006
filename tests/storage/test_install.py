"""A non-editable install runs the WAL backend its build allowed, even from inside a clone.

Both tests build a wheel from a copy of this checkout and install it with
``pip install --target`` into a temporary directory, then run Chronik from
that directory only: ``python -S`` (no ``.pth`` files, so this environment's
editable install of Chronik -- a path entry or meta-path finder -- cannot
shadow the wheel) with ``PYTHONPATH`` = the target directory plus this
environment's site-packages (the dependencies) as plain path entries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns("build", "dist", "*.egg-info", "*.so", "__pycache__", ".ci-venv", ".venv", ".git",
                               "tests", "bench")


def install_wheel(tmp_path: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """Build a wheel of this checkout with ``env`` (the compiler settings) and install it
    into ``tmp_path/site``; return (wheel, site)."""
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_SKIP)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", str(wheels)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("chronik-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return wheel, site


def run_installed(site: Path, args: list[str], cwd: Path) -> str:
    """Run ``python -S ARGS`` in ``cwd`` with only the install in ``site`` (and the dependencies) importable."""
    paths = [str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    run = subprocess.run([sys.executable, "-S", *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.stdout


def chronik_info(site: Path, cwd: Path) -> dict:  # type: ignore[type-arg]
    """``python -m chronik info`` in ``cwd``, after checking that ``chronik`` is imported from ``site`` there."""
    imported = run_installed(site, ["-c", "import chronik; print(chronik.__file__)"], cwd).strip()
    assert imported.startswith(str(site)), imported
    return json.loads(run_installed(site, ["-m", "chronik", "info"], cwd))  # type: ignore[no-any-return]


def test_install_with_a_failing_compiler_falls_back_to_the_python_backend(tmp_path: Path) -> None:
    wheel, site = install_wheel(tmp_path, dict(os.environ, CC="/bin/false", LDSHARED="/bin/false"))
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    info = chronik_info(site, cwd=tmp_path)
    assert info["default_wal_backend"] == "python"
    assert "native" not in info["wal_backends"]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) to build the native extension")
def test_install_with_a_compiler_runs_native_from_the_repository_root(tmp_path: Path) -> None:
    """README's quick start typed in a clone: the source tree must not shadow the
    installed package and its built extension (the src/ layout)."""
    wheel, site = install_wheel(tmp_path, dict(os.environ))
    assert [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    info = chronik_info(site, cwd=REPO)
    assert info["default_wal_backend"] == "native", info
    assert info["native_extension"]["available"] is True, info
