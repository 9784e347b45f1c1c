"""A TCP proxy in front of the broker that plays an unreachable network (`make soak`, tests).

`FaultProxy` forwards Kafka connections and, on command, cuts off every client but the
exempt ones (or only one worker); `ProxyProcess` runs it in a child process driven by lines
on its stdin: `python -m streams.faultproxy LISTEN_PORT HOST:PORT [EXEMPT_PREFIX...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.testing import ROOT, until

__all__ = ["kafka_client_id", "FaultProxy", "ProxyProcess"]


def kafka_client_id(first_request: bytes) -> str | None:
    """The client id in the header of a Kafka request (size prefix included), if readable."""
    # size:int32, api_key:int16, api_version:int16, correlation_id:int32, client_id:nullable str
    if len(first_request) < 14:
        return None
    (length,) = struct.unpack(">h", first_request[12:14])
    if length < 0 or len(first_request) < 14 + length:
        return None
    return first_request[14 : 14 + length].decode("utf-8", "replace")


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    client_id: str | None = None  # None until the first request is read
    dropping: bool = False


class FaultProxy:
    """A TCP forwarder in front of the broker that can play an unreachable network.

    Clients whose Kafka client id starts with one of `exempt` (the soak's producer and
    checker) are always forwarded. During an outage every other connection is cut off:
    `drop` mode holds existing and new connections open but forwards nothing, like a
    network that loses every packet (clients wait for their request timeouts); `reset`
    mode resets them at once and refuses new ones. When the outage ends, the held
    connections are reset, so clients reconnect to a working broker. An outage can also
    cut off only the clients whose id starts with `only` (one worker: a network partition).
    The broker must advertise the proxy's address, or clients go around it after the first
    metadata response.
    """

    def __init__(self, listen_port: int, target: tuple[str, int], exempt: Sequence[str] = ()) -> None:
        self.listen_port = listen_port
        self.target = target
        self.exempt = tuple(exempt)
        self.mode: str | None = None  # None: forwarding; "drop" or "reset": an outage
        self.only: str | None = None  # the outage cuts off only these client ids (None: all)
        self.outages = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._abort(link)
        if self._server is not None:
            await self._server.wait_closed()

    def _faulted(self, client_id: str | None) -> bool:
        if self.mode is None or client_id is None:
            return False
        if self.exempt and client_id.startswith(self.exempt):
            return False
        return self.only is None or client_id.startswith(self.only)

    def cut(self, mode: str = "drop", only: str | None = None) -> None:
        """Start an outage for every non-exempt client (or only those whose id starts with `only`)."""
        if mode not in ("drop", "reset"):
            raise ValueError(f"unknown outage mode {mode!r}")
        self.mode, self.only = mode, only
        self.outages += 1
        for link in list(self._links):
            if self._faulted(link.client_id):
                link.dropping = True
                if mode == "reset":
                    self._abort(link)

    def heal(self) -> None:
        """End the outage: reset the connections that were held, forward new ones again."""
        self.mode = self.only = None
        for link in list(self._links):
            if link.dropping:
                self._abort(link)

    def _abort(self, link: _Link) -> None:
        for writer in (link.client, link.upstream):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            head = await reader.readexactly(4)
            (size,) = struct.unpack(">i", head)
            first = head + await reader.readexactly(min(max(size, 0), 10 * 1024 * 1024))
            link.client_id = kafka_client_id(first) or ""
            if self._faulted(link.client_id):
                if self.mode == "reset":
                    self._abort(link)
                    return
                link.dropping = True
                while await reader.read(65536):  # held open, swallowing requests
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            link.upstream = up_writer
            up_writer.write(first)
            await asyncio.gather(self._pump(reader, up_writer, link), self._pump(up_reader, writer, link))
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._abort(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if link.dropping:
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            self._abort(link)


class ProxyProcess:
    """A `FaultProxy` in a child process (its own CPU), driven by lines on its stdin."""

    def __init__(self, listen_port: int, target: str, exempt: Sequence[str], log_path: Path) -> None:
        self.listen_port = listen_port
        self.address = f"127.0.0.1:{listen_port}"
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.faultproxy", str(listen_port), target, *exempt],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )

    async def wait_ready(self, timeout_s: float = 15.0) -> None:
        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.listen_port)
            except OSError:
                return False
            writer.close()
            return True

        await until(listening, timeout_s, f"the proxy on port {self.listen_port}")

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def cut(self, mode: str = "drop", only: str | None = None) -> None:
        self._send(f"cut {mode} {only}" if only else f"cut {mode}")

    def heal(self) -> None:
        self._send("heal")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


async def _serve_proxy(listen_port: int, target: str, exempt: Sequence[str]) -> None:
    host, _, port = target.rpartition(":")
    proxy = await FaultProxy(listen_port, (host, int(port)), exempt).start()
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:  # the parent is gone
                return
            command, *args = line.split()
            if command == "cut":
                proxy.cut(*args)
            elif command == "heal":
                proxy.heal()
    finally:
        await proxy.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m streams.faultproxy LISTEN_PORT HOST:PORT [EXEMPT_PREFIX...]`."""
    parser = argparse.ArgumentParser(
        prog="python -m streams.faultproxy",
        description="a fault-injecting TCP proxy; stdin: 'cut drop|reset [CLIENT_ID_PREFIX]', 'heal'",
    )
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target")
    parser.add_argument("exempt", nargs="*")
    args = parser.parse_args(argv)
    asyncio.run(_serve_proxy(args.listen_port, args.target, args.exempt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
