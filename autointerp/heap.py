"""Handing memory a step has freed back to the system."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def return_freed_memory() -> None:
    """Collect garbage (a model's hooks and parameters may sit in reference cycles), then hand
    freed heap back to the system: glibc keeps it in per-thread arenas, so a process running one
    step after another would otherwise hold the high-water mark of every step it has run."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): no trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
