"""``torch.compile`` that falls back to eager execution, once and with a warning, when compiling fails.

Compiling needs a working backend (on CPU, a C++ compiler); a run must not die over a speed-up.
The eager call that replaces a failed compiled one re-raises any genuine error of the function itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class CompiledOrEager:
    """``fn`` compiled with ``torch.compile(fn, **options)``; eager from the first failure on."""

    def __init__(self, fn: Callable, what: str, **options):
        self.fn, self.what = fn, what
        self.compiled = torch.compile(fn, **options)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly instead
                warnings.warn(f"torch.compile of {self.what} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); running it eagerly", stacklevel=2)
                self.failed = True
        return self.fn(*args, **kwargs)
