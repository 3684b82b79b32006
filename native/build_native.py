"""cffi (API mode) builder of ``chronik._native_wal``, the native WAL worker.

Used by ``setup.py`` through ``cffi_modules=["native/build_native.py:ffibuilder"]``;
paths are relative to the project root, where setuptools runs it.  The cdef is
read from ``native/chronik_wal.h`` itself (preprocessor lines dropped), so the
C header is the only declaration of the API.
"""

from __future__ import annotations

from pathlib import Path

import cffi

HEADER = Path(__file__).with_name("chronik_wal.h")


def header_declarations() -> str:
    """The header's C declarations without its preprocessor lines (cffi cannot parse those)."""
    lines = HEADER.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


ffibuilder = cffi.FFI()
ffibuilder.cdef(header_declarations())
ffibuilder.set_source(
    "chronik._native_wal",
    '#include "chronik_wal.h"',
    sources=["native/chronik_wal.c"],
    include_dirs=["native"],
    libraries=["pthread"],
    extra_compile_args=["-O2"],
)
