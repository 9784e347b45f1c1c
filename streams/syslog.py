"""The syslog listener: UDP datagrams and TCP streams (RFC 6587) in, raw lines to Kafka.

Network devices send RFC 5424 or RFC 3164 messages; the listener only frames them and
produces each message's bytes to `noc.events` with the `socnoc-format: syslog` header (the
worker's `syslog` adapter parses them) and the sender's address as key, so one device's
messages stay in order on one partition. TCP framing is detected per frame (RFC 6587 3.4):
a digit starts an octet-counted frame, anything else a newline-terminated one. Bad frames
are counted and skipped, never fatal. While Kafka is down, messages wait in a bounded
queue: TCP senders are slowed down (backpressure), UDP messages beyond it are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from streams.kafka_sink import KafkaSink, KafkaUnavailable, OutRecord
from streams.metrics import SyslogMetrics

__all__ = ["FrameDecoder", "BadFrame", "SyslogListener", "SyslogConfig", "DEFAULT_PORT"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 5514  # unprivileged stand-in for 514, on both UDP and TCP
FORMAT_HEADER = "socnoc-format"
Transport = Literal["udp", "tcp"]
_MAX_DIGITS = 9  # an octet count of more than 9 digits is garbage at any sane limit


@dataclass(frozen=True)
class BadFrame:
    """A frame that was skipped, and why (a metric label)."""

    reason: Literal["empty", "oversize", "bad_length"]


class FrameDecoder:
    """RFC 6587 framing of one TCP stream: bytes in, messages and bad frames out (pure).

    After an octet count beyond the limit (or an endless line) the stream cannot be trusted,
    so the decoder skips to the next newline, as a non-transparent-framing receiver would.
    The result does not depend on how the stream was split into reads.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._skipping = False  # discarding the rest of an oversize line

    def feed(self, data: bytes) -> list[bytes | BadFrame]:
        """Take the next chunk of the stream; return the complete frames in it."""
        self._buf += data
        out: list[bytes | BadFrame] = []
        while self._buf:
            if self._skipping:
                end = self._buf.find(b"\n")
                if end < 0:
                    self._buf.clear()
                    break
                del self._buf[: end + 1]
                self._skipping = False
                continue
            first = self._buf[0]
            if first in b"\r\n\0 ":  # stray trailers and keep-alive blanks between frames
                del self._buf[:1]
                continue
            item = self._octet_counted() if 0x31 <= first <= 0x39 else self._line()
            if item is None:
                break
            out.append(item)
        return out

    def finish(self) -> list[bytes | BadFrame]:
        """End of stream: what is left is framed as if a newline had followed it, so a last
        line without its newline is still a message; an octet-counted frame cut short is a
        bad frame."""
        if self._skipping or not self._buf:
            self._buf.clear()
            self._skipping = False
            return []
        out = self.feed(b"\n")
        if self._buf:
            self._buf.clear()
            out.append(BadFrame("bad_length"))
        return out

    def _octet_counted(self) -> bytes | BadFrame | None:
        space = 0
        while space < len(self._buf) and 0x30 <= self._buf[space] <= 0x39:
            space += 1
        if space == len(self._buf) and space <= _MAX_DIGITS:
            return None  # the length is still arriving
        if space == len(self._buf) or self._buf[space] != 0x20 or space > _MAX_DIGITS:
            # Not a length after all: a line that happens to start with a digit.
            return self._line()
        length = int(self._buf[:space])
        if length > self._max:
            return self._skip_oversize()
        if len(self._buf) < space + 1 + length:
            return None
        # Senders such as rsyslog's RFC 5424 template end the frame with a newline: drop it.
        message = bytes(self._buf[space + 1: space + 1 + length]).rstrip(b"\r\n\0")
        del self._buf[: space + 1 + length]
        return message if message.strip() else BadFrame("empty")

    def _skip_oversize(self) -> BadFrame:
        self._skipping = True
        return BadFrame("oversize")

    def _line(self) -> bytes | BadFrame | None:
        end = self._buf.find(b"\n")
        if end < 0:
            # Judge the size as the line will be judged once its newline arrives (without a
            # trailing CR/NUL), but never hold more than about twice the limit.
            pending = len(self._buf)
            if pending > self._max and (
                pending > 2 * self._max + 2 or len(bytes(self._buf).rstrip(b"\r\0")) > self._max
            ):
                self._skipping = True
                self._buf.clear()
                return BadFrame("oversize")
            return None
        line = bytes(self._buf[:end]).rstrip(b"\r\0")
        del self._buf[: end + 1]
        if len(line) > self._max:
            return BadFrame("oversize")
        return line if line.strip() else BadFrame("empty")


@dataclass(frozen=True)
class SyslogConfig:
    """Where the listener listens and what it produces."""

    host: str = "0.0.0.0"
    udp_port: int | None = DEFAULT_PORT
    tcp_port: int | None = DEFAULT_PORT
    topic: str = "noc.events"
    max_message_bytes: int = 64 * 1024
    queue_size: int = 10_000
    batch_size: int = 500
    max_connections: int = 1000


@dataclass
class _Pending:
    value: bytes
    peer: str
    transport: Transport
    received: datetime = field(default_factory=lambda: datetime.now(UTC))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: SyslogListener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._listener._datagram(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.warning("syslog UDP socket error: %s", type(exc).__name__)


class SyslogListener:
    """UDP and TCP syslog receivers feeding one Kafka sink through a bounded queue."""

    def __init__(self, config: SyslogConfig, sink: KafkaSink, metrics: SyslogMetrics) -> None:
        self.config = config
        self.sink = sink
        self.metrics = metrics
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(config.queue_size)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self.udp_port: int | None = None
        self.tcp_port: int | None = None

    async def start(self) -> None:
        """Bind the sockets and start producing; ports 0 pick free ones (see `*_port`)."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.udp_port is not None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(cfg.host, cfg.udp_port)
            )
            self._udp = transport
            self.udp_port = int(transport.get_extra_info("sockname")[1])
        if cfg.tcp_port is not None:
            self._tcp = await asyncio.start_server(self._serve_tcp, cfg.host, cfg.tcp_port,
                                                   limit=cfg.max_message_bytes + 64)
            self.tcp_port = int(self._tcp.sockets[0].getsockname()[1])
        self._pump = asyncio.create_task(self._produce_forever(), name="syslog-pump")
        log.info("syslog listening on %s (udp %s, tcp %s) -> %s", cfg.host, self.udp_port,
                 self.tcp_port, cfg.topic)

    async def stop(self, drain_s: float = 5.0) -> None:
        """Stop listening, then give queued messages `drain_s` to reach Kafka."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if not self._queue.empty():
            log.warning("syslog listener stopped with %d messages not produced",
                        self._queue.qsize())

    # -- receiving ---------------------------------------------------------------------

    def _datagram(self, data: bytes, peer: str) -> None:
        message = data.rstrip(b"\r\n\0")
        if len(message) > self.config.max_message_bytes:
            self._bad("udp", BadFrame("oversize"))
        elif not message.strip():
            self._bad("udp", BadFrame("empty"))
        else:
            try:
                self._queue.put_nowait(_Pending(message, peer, "udp"))
            except asyncio.QueueFull:
                self.metrics.dropped.labels(transport="udp").inc()

    def _bad(self, transport: Transport, frame: BadFrame) -> None:
        self.metrics.bad_frames.labels(transport=transport, reason=frame.reason).inc()

    def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                   ) -> None:
        task = asyncio.create_task(self._connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                          ) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else "unknown"
        if len(self._connections) > self.config.max_connections:
            log.warning("refusing syslog connection from %s: too many connections", peer)
            writer.close()
            return
        decoder = FrameDecoder(self.config.max_message_bytes)
        try:
            while True:
                data = await reader.read(65536)
                frames = decoder.feed(data) if data else decoder.finish()
                for frame in frames:
                    if isinstance(frame, BadFrame):
                        self._bad("tcp", frame)
                    else:
                        await self._queue.put(_Pending(frame, peer, "tcp"))  # backpressure
                if not data:
                    break
        except (ConnectionError, OSError) as exc:
            log.info("syslog connection from %s ended: %s", peer, type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- producing ---------------------------------------------------------------------

    async def _produce_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.config.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [
                OutRecord(
                    self.config.topic, p.value, key=p.peer.encode(),
                    headers=((FORMAT_HEADER, b"syslog"), ("socnoc-peer", p.peer.encode()),
                             ("socnoc-received-at", p.received.isoformat().encode())),
                )
                for p in batch
            ]
            while True:
                try:
                    await self.sink.send(records)
                    break
                except KafkaUnavailable:
                    # Keep the batch; the queue fills meanwhile and applies backpressure.
                    await self.sink.wait_up(1.0)
            for p in batch:
                self.metrics.messages.labels(transport=p.transport).inc()
                self._queue.task_done()
