"""Child processes of the bench never outlive it."""

from __future__ import annotations

import contextlib
import signal
import sys

__all__ = ["cpu_seconds", "die_with_parent"]


def die_with_parent() -> None:
    """`preexec_fn` of the bench's children: SIGKILL them when the bench dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) a live process has used so far, from `/proc` (Linux), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
