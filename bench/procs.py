"""Child processes of the bench never outlive it."""

from __future__ import annotations

import contextlib
import signal
import sys

__all__ = ["die_with_parent"]


def die_with_parent() -> None:
    """`preexec_fn` of the bench's children: SIGKILL them when the bench dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
