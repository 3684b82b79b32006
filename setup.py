"""Build hook for the optional native WAL extension (project metadata is in pyproject.toml).

``chronik._native_wal`` (cffi, sources in ``native/``) is built when a C
compiler is available.  Without one the build prints a warning and the install
still succeeds; Chronik then uses its pure-Python WAL backend.
"""

from __future__ import annotations

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

BUILD_FAILURES = (CCompilerError, CompileError, LinkError, ExecError, PlatformError, OSError)


def warn_not_built(cause: BaseException) -> None:
    print(
        f"chronik: native WAL extension not built ({type(cause).__name__}: {cause}); "
        "the pure-Python backend will be used",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """``build_ext`` that turns a failed compile or link into a warning.

    A failed extension is marked ``optional`` so that later steps (the in-place
    copy of ``--inplace`` and editable installs) skip its missing output.
    """

    def run(self) -> None:
        try:
            super().run()
        except BUILD_FAILURES as exc:  # e.g. no compiler for this platform at all
            for ext in self.extensions:
                ext.optional = True
            warn_not_built(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except BUILD_FAILURES as exc:
            ext.optional = True
            warn_not_built(exc)


setup(
    cffi_modules=["native/build_native.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
