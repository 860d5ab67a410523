"""Pause the cyclic garbage collector while an analysis builds many small, acyclic containers."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Below this the collector's cost is noise; above it, full collections rescanning a heap that grows with the
# blueprint made plan/cost/audit grow faster than linearly (measured by bench/analysis.py).
LARGE_DOCUMENT = 2_000


@contextmanager
def paused_gc(size: int) -> Iterator[None]:
    """Disable the cyclic GC for a large document (reference counting still frees everything we allocate).

    Restores the collector only if it was enabled on entry, so overlapping callers never leave it off and an
    application that disabled it on purpose keeps it disabled.
    """
    if size < LARGE_DOCUMENT or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
