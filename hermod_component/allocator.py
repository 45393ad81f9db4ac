"""
Keep the C allocator from handing Hermod's write buffers back to the kernel after each use.

A fan-out is written as joined chunks of 32 KB, and Twisted's transport concatenates what waits
to be sent into one bytes object of up to the write buffer's size (4 MB by default). With glibc's
default settings such allocations above 128 KB get pages of their own from C{mmap} that are
unmapped again when freed, and memory freed at the top of the heap is returned to the kernel
once more than 128 KB of it are free: each fan-out then faults its buffers' pages in again, and
the kernel zeroes every one. On the loopback bench at 1,000 subscribers that cost about a third
of Hermod's CPU.

L{tuneAllocator} raises both thresholds with C{mallopt}: allocations up to L{MMAP_THRESHOLD}
come from the heap, which keeps up to L{TRIM_THRESHOLD} of free memory at its top for reuse.
Memory stays bounded: freed buffers are reused by the next fan-out, not accumulated. A
threshold the operator has set through glibc's own environment variables
(C{MALLOC_MMAP_THRESHOLD_}, C{MALLOC_TRIM_THRESHOLD_}) is left as set. On a C library other than
glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

#: Allocations up to this many bytes come from the heap instead of an mmap of their own.
MMAP_THRESHOLD = 16 * 1024 * 1024

#: Free memory at the top of the heap kept for reuse before it is returned to the kernel.
TRIM_THRESHOLD = 32 * 1024 * 1024

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tuneAllocator(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """
    Raise glibc's mmap and trim thresholds, except those set in C{environ}.

    @return: The settings changed, by the name of their environment variable (empty when the
        C library is not glibc or every threshold was set by the operator).
    """
    libc = _glibc()
    if libc is None:
        return {}
    changed = {}
    for variable, parameter, value in _SETTINGS:
        if variable not in environ and libc.mallopt(parameter, value) == 1:
            changed[variable] = value
    return changed
