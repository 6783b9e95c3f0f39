"""A provider's SDK, once imported, kept out of the cyclic garbage collector's full passes.

The engine freezes the heap alive as it first starts (engine/context.py,
`_freeze_startup_heap`); an SDK a provider imports later is not part of it. google-genai alone
brings ~50,000 tracked objects, and every full collection afterwards walks them while holding
the GIL: a full pass went from 34 ms to 75 ms once it was loaded (2-core machine), a stall of
the window and of every worker alike. Each provider wraps its lazy import in `sdk_import`.

Threads: any (the first import of a module is serialised by the import system). State: none;
whether the SDK was imported before is read from `sys.modules`.
"""
from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def sdk_import(module: str) -> Iterator[None]:
    """Around a provider's lazy ``import`` of its SDK (``module``: its top-level name as
    `sys.modules` knows it, e.g. "google.genai"). The first time in this process, once the
    import succeeded: the garbage the import left is collected, then everything alive is
    frozen (`gc.freeze`): still freed when nothing refers to it, only a reference cycle among
    it is never collected. Later builds of the provider find the module loaded and do
    nothing."""
    fresh = module not in sys.modules
    yield
    if fresh and module in sys.modules:
        gc.collect()
        gc.freeze()
