"""Large buffers go back to the operating system when freed (glibc only; elsewhere a no-op).

Imports stream through buffers of megabytes (COPY blocks, Parquet row groups, upload chunks).
glibc serves a request above ``M_MMAP_THRESHOLD`` with its own mapping, returned at ``free``,
but raises that threshold dynamically each time such a block is freed (up to 32 MiB): after a
few blocks, megabyte buffers come from the heap instead, where freed memory stays in the
process. The peak RSS of an import then grew with its length (182 MB of growth for 1 M rows,
257 MB for 5 M, ``bench/bench_import_e2e.py``) though what it holds at once does not. Fixing the
threshold (which also stops the dynamic rise) keeps every block of 1 MiB or more in a mapping of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD = 1024 * 1024
_done = False


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process (once); True when it took effect."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
    if not _done:
        log.warning("mallopt(M_MMAP_THRESHOLD) was refused; large buffers may stay in the heap")
    return _done
