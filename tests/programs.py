"""Locating, starting and stopping the real programs the tests run (no pytest fixtures)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

__all__ = ["free_port", "wait_for_port", "require_binary", "stop_process"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, deadline_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {deadline_s}s")


def require_binary(*candidates: str) -> str:
    """The first existing executable; fail (never skip) with what to install if none."""
    for candidate in candidates:
        found = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if found and os.access(found, os.X_OK):
            return found
    pytest.fail(
        f"required program not found: {' or '.join(candidates)}. "
        "Run `sudo scripts/ensure-system-packages.sh` (Debian packages prometheus, "
        "prometheus-alertmanager, rsyslog).",
        pytrace=False,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0,
                 sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
