"""Installing without a working C compiler still gives a working Chronik (Python WAL backend)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns("build", "dist", "*.egg-info", "*.so", "__pycache__", ".ci-venv", ".git", "tests", "bench")


def test_install_with_a_failing_compiler_falls_back_to_the_python_backend(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_SKIP)
    wheels = tmp_path / "wheels"
    env = dict(os.environ, CC="/bin/false", LDSHARED="/bin/false")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", str(wheels)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("chronik-*.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = (
        "import json, chronik, chronik.cli, io, contextlib\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out): chronik.cli.main(['info'])\n"
        "print(json.dumps({'file': chronik.__file__, 'info': json.loads(out.getvalue())}))\n"
    )
    # -S: no .pth files, so this environment's editable install of Chronik
    # (a meta-path finder) cannot shadow the wheel; dependencies come from
    # this environment's site-packages, added as plain path entries.
    paths = [str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    run = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {paths!r}\n" + probe],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["file"].startswith(str(site)), result["file"]
    assert result["info"]["default_wal_backend"] == "python"
    assert "native" not in result["info"]["wal_backends"]
