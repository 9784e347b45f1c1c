"""Fencing a worker cut off from the broker: its lease on its consumer group membership.

The group coordinator gives a member's partitions to another worker once it has heard
nothing from it for the session timeout. A worker cut off from the broker does not learn
that: its producer still holds the outputs it sent last, retries them, and delivers them
when the network comes back, after the partitions' new owner scanned the outputs at its
restore, so they are published twice. Without transactions (the broker fencing a producer
epoch) a worker has to fence itself, from what it knows: when the coordinator last
accepted it.

`GroupLease` keeps the moment the newest accepted group request (Heartbeat, JoinGroup,
SyncGroup; a heartbeat answered "rebalancing" counts) was *sent*: the coordinator received
it later, so this member's session lasts at least `session` from there. Two deadlines count
from that moment:

- `valid()` holds for half the session: records are handed to a producer only while it
  holds (`gate()` waits for the next accepted heartbeat, and raises `LeaseLost` when none
  comes within a session of waiting);
- `fence_at` is at 80% of the session: a producer that still holds undelivered records then
  is abandoned (`ProducerFence.abandon`): it connects no more, its connections are reset,
  its sender and requests in flight are cancelled, and every record it held fails instead
  of being delivered late.

What this cannot stop: bytes already handed to the operating system before the fence, which
a network may still deliver afterwards. Only broker-side fencing (transactions) closes that.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

__all__ = ["LeaseLost", "GroupLease", "ProducerFence", "accepted"]

# Kafka API keys of the group requests whose acceptance proves the membership is alive
_HEARTBEAT, _JOIN_GROUP, _SYNC_GROUP = 12, 11, 14
_RENEWING = frozenset((_HEARTBEAT, _JOIN_GROUP, _SYNC_GROUP))
# a heartbeat answered "rebalancing" still counts: the coordinator keeps the member until it
# rejoins or the rebalance timeout passes, and the stage checkpoints in that time (revoke)
_REBALANCE_IN_PROGRESS = 27

VALID_SHARE = 0.5  # of the session: new records may be handed to a producer
FENCE_SHARE = 0.8  # of the session: a producer still holding records is abandoned


class LeaseLost(KafkaError):  # type: ignore[misc]
    """The group coordinator may have given this worker's partitions to another worker
    (a broker error: the stage's session ends and a new one restores)."""


class GroupLease:
    """When the coordinator last accepted this member, and what that allows."""

    def __init__(self, session_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if session_s <= 0:
            raise ValueError("the session timeout must be positive")
        self.session_s = session_s
        self._clock = clock
        self.renewed_at = -math.inf  # send time of the newest accepted group request
        self._renewed = asyncio.Event()
        self._lost: LeaseLost | None = None

    def attach(self, consumer: AIOKafkaConsumer) -> None:
        """Renew on every group request the consumer's coordinator gets accepted.

        aiokafka sends each of them through its group coordinator's `_send_req` (0.14); the
        consumer must be started (the coordinator exists from `start()`)."""
        coordinator = getattr(consumer, "_coordinator", None)
        send: Callable[[Any], Awaitable[Any]] | None = getattr(coordinator, "_send_req", None)
        if send is None:
            raise TypeError("the consumer has no group coordinator (started, with a group id?)")

        async def send_and_renew(request: Any) -> Any:
            sent = self._clock()
            response = await send(request)
            if accepted(getattr(request, "API_KEY", None), getattr(response, "error_code", None)):
                self.renew(sent)
            return response

        coordinator._send_req = send_and_renew  # type: ignore[union-attr]

    def lose(self, exc: LeaseLost) -> None:
        """For good (the producers were abandoned): `gate()` raises `exc` from now on."""
        self._lost = exc
        self._renewed.set()

    def renew(self, sent: float) -> None:
        if sent > self.renewed_at:
            self.renewed_at = sent
            self._renewed.set()
            self._renewed = asyncio.Event()

    @property
    def valid_until(self) -> float:
        return self.renewed_at + VALID_SHARE * self.session_s

    @property
    def fence_at(self) -> float:
        return self.renewed_at + FENCE_SHARE * self.session_s

    def valid(self) -> bool:
        return self._clock() < self.valid_until

    async def gate(self) -> None:
        """Return at once while the lease is valid; else wait for the coordinator to accept
        this member again, or raise `LeaseLost` if a session passes first (or it is lost)."""
        if self._lost is not None:
            raise self._lost
        if self._clock() < self.valid_until:
            return
        deadline = self._clock() + self.session_s
        while not self.valid():
            if self._lost is not None:
                raise self._lost
            left = deadline - self._clock()
            if left <= 0:
                raise LeaseLost(
                    f"the group coordinator has not accepted this member for "
                    f"{self._clock() - self.renewed_at:.1f} s (session {self.session_s:g} s)"
                )
            renewed = self._renewed
            try:
                await asyncio.wait_for(renewed.wait(), left)
            except TimeoutError:
                continue


def accepted(api_key: int | None, error_code: int | None) -> bool:
    """Whether a group request's response shows the coordinator still holds the member."""
    if api_key not in _RENEWING:
        return False
    return error_code == 0 or (api_key == _HEARTBEAT and error_code == _REBALANCE_IN_PROGRESS)


class ProducerFence:
    """What abandons a producer (`abandon`). Installed before the producer starts: it makes
    the producer's client refuse every connection once fenced, including one being made when
    the fence falls (aiokafka writes a request as soon as its connection is ready)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.fenced: BaseException | None = None
        client = producer.client
        get_conn: Callable[..., Awaitable[Any]] = client._get_conn

        async def get_conn_unless_fenced(*args: Any, **kwargs: Any) -> Any:
            conn = await get_conn(*args, **kwargs)
            if self.fenced is not None:
                return None  # (`client.send` raises NodeNotReadyError: nothing is written)
            return conn

        client._get_conn = get_conn_unless_fenced

    def holds_undelivered(self) -> bool:
        """Whether the producer holds records not acknowledged yet (queued, or in flight)."""
        acc = self.producer._message_accumulator
        batches = [*acc._pending_batches, *(b for queue in acc._batches.values() for b in queue)]
        return any(not batch.future.done() for batch in batches)

    def abandon(self, exc: BaseException) -> None:
        """Make sure nothing the producer holds reaches the broker, as far as this process
        can: refuse new connections, reset the open ones (SO_LINGER 0: the kernel drops what
        it had not sent yet instead of sending it before closing), cancel the sender and its
        requests in flight, and fail every record held with `exc`. The producer is unusable
        afterwards; `stop()` closes it without waiting for anything. What the network
        already carries may still arrive."""
        if self.fenced is not None:
            return
        self.fenced = exc
        producer = self.producer
        for conn in list(producer.client._conns.values()):
            writer = getattr(conn, "_writer", None)
            if writer is None:
                continue
            sock = writer.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        sender = producer._sender
        for task in asyncio.all_tasks():
            if _produces_for(task, sender):
                task.cancel()
        if sender.sender_task is not None:
            sender.sender_task.cancel()
        producer._message_accumulator.fail_all(exc)


def _produces_for(task: asyncio.Task[Any], sender: Any) -> bool:
    """Whether `task` is one of `sender`'s produce requests (aiokafka 0.14 runs each as a task
    of `Sender._send_produce_req`, tracked only inside the sender's routine)."""
    coro: Any = task.get_coro()
    frame = getattr(coro, "cr_frame", None)
    code = getattr(coro, "cr_code", None)
    if frame is None or code is None or code.co_name != "_send_produce_req":
        return False
    return frame.f_locals.get("self") is sender
