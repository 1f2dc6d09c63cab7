"""Application-side helpers for driving dquic endpoints in the simulator.

``EndpointNode`` adapts a sans-IO :class:`dquic.endpoint.Endpoint` to the simulator's node
protocol and, like an application would, reads every complete message as it arrives, so tests
can compare what was sent with what came out. ``make_pair`` builds a client and a server node
joined by a link, ready to run.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Dict, List, Optional, Tuple

from ..config import Configuration
from ..connection import CoreConnection
from ..endpoint import Endpoint
from ..events import ConnectionTerminated, Event, HandshakeCompleted
from .sim import LinkConfig, Network

__all__ = ["EndpointNode", "make_pair", "CLIENT_ADDR", "SERVER_ADDR", "shared_identity"]

CLIENT_ADDR = ("198.51.100.7", 50000)
SERVER_ADDR = ("192.0.2.1", 4433)


class EndpointNode:
    """A simulator node around an ``Endpoint`` that collects received messages.

    ``messages[(connection, stream_id)]`` lists complete messages in arrival order. With
    ``reading=False`` the node reads nothing (to test flow control against a stalled reader);
    set it back to True to resume.
    """

    def __init__(self, endpoint: Endpoint, reading: bool = True, keep_data: bool = True,
                 read_size: int = 1 << 20) -> None:
        self.endpoint = endpoint
        self.reading = reading
        self.keep_data = keep_data
        self.read_size = read_size
        self.messages: Dict[Tuple[CoreConnection, int], List[bytes]] = {}
        self.digests: Dict[Tuple[CoreConnection, int], Any] = {}
        self.message_counts: Dict[Tuple[CoreConnection, int], int] = {}
        self.bytes_received = 0
        self.events: List[Tuple[CoreConnection, Event]] = []
        self._partial: Dict[Tuple[CoreConnection, int], List[bytes]] = {}

    # simulator node protocol
    def receive_datagram(self, data: bytes, addr: Tuple, now: float) -> None:
        self.endpoint.receive_datagram(data, addr, now)
        self._drain()

    def datagrams_to_send(self, now: float) -> List[Tuple[bytes, Tuple]]:
        out = self.endpoint.datagrams_to_send(now)
        self._drain()
        return out

    def get_timer(self) -> Optional[float]:
        return self.endpoint.get_timer()

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._drain()

    # application side
    def _drain(self) -> None:
        while True:
            item = self.endpoint.next_event()
            if item is None:
                break
            self.events.append(item)
        if self.reading:
            self.read_all()

    def read_all(self) -> None:
        """Read every readable message piece from every connection."""
        for conn in self.endpoint.connections:
            for sid in conn.readable_streams():
                key = (conn, sid)
                for _ in range(1 << 16):
                    piece = conn.read_message(sid, self.read_size)
                    if piece is None:
                        break
                    data, end = piece
                    self.bytes_received += len(data)
                    self._partial.setdefault(key, []).append(data)
                    if end:
                        msg = b"".join(self._partial.pop(key))
                        self.message_counts[key] = self.message_counts.get(key, 0) + 1
                        self.digests.setdefault(key, hashlib.sha256()).update(
                            len(msg).to_bytes(8, "big") + msg)
                        if self.keep_data:
                            self.messages.setdefault(key, []).append(msg)

    def stream_messages(self, stream_id: int, conn: Optional[CoreConnection] = None) -> List[bytes]:
        """Messages received on ``stream_id`` (of ``conn``, or of the only connection)."""
        for (c, sid), msgs in self.messages.items():
            if sid == stream_id and (conn is None or c is conn):
                return msgs
        return []

    def count(self, stream_id: int) -> int:
        return sum(n for (c, sid), n in self.message_counts.items() if sid == stream_id)

    def digest(self, stream_id: int) -> Optional[str]:
        for (c, sid), h in self.digests.items():
            if sid == stream_id:
                return h.hexdigest()
        return None

    def terminated(self) -> List[ConnectionTerminated]:
        return [e for _, e in self.events if isinstance(e, ConnectionTerminated)]

    def handshakes(self) -> List[HandshakeCompleted]:
        return [e for _, e in self.events if isinstance(e, HandshakeCompleted)]


def messages_digest(messages: List[bytes]) -> str:
    """The digest ``EndpointNode.digest`` computes, for the messages that were sent."""
    h = hashlib.sha256()
    for m in messages:
        h.update(len(m).to_bytes(8, "big") + m)
    return h.hexdigest()


_SHARED_IDENTITY = None


def shared_identity():
    """A server key pair generated once per process (tests need a server identity).

    (Not named ``test_*``: pytest would collect it as a test wherever it is imported.)"""
    global _SHARED_IDENTITY
    if _SHARED_IDENTITY is None:
        from ..keys import KeyPair

        _SHARED_IDENTITY = KeyPair.generate()
    return _SHARED_IDENTITY


def make_pair(
    link: Optional[LinkConfig] = None,
    reverse: Optional[LinkConfig] = None,
    seed: int = 0,
    client_config: Optional[Configuration] = None,
    server_config: Optional[Configuration] = None,
    encryption: bool = True,
    server_endpoint: Optional[dict] = None,
    **network_kw: Any,
) -> Tuple[Network, EndpointNode, EndpointNode, CoreConnection]:
    """A client and a server endpoint in a simulated network, the client already connecting.

    Returns ``(network, client_node, server_node, client_connection)``; send with
    ``client_connection.send_message(...)`` then ``network.run(until=..., max_time=...)``.
    Randomness (connection IDs, keys' nonces aside) is drawn from ``seed`` so runs repeat.
    ``server_endpoint`` holds extra ``Endpoint`` options (``require_retry``, ``max_handshakes``...).
    """
    rng = random.Random(seed)

    def rand(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    ccfg = client_config or Configuration(encryption=encryption)
    scfg = server_config or Configuration(is_client=False, encryption=encryption)
    if scfg.encryption and scfg.identity is None:
        scfg = scfg.copy(identity=shared_identity())
    net = Network(seed=seed, **network_kw)
    server = EndpointNode(Endpoint(scfg, accept=True, random_bytes=rand, **(server_endpoint or {})))
    client = EndpointNode(Endpoint(ccfg, random_bytes=rand))
    net.add_node(server, SERVER_ADDR)
    net.add_node(client, CLIENT_ADDR)
    if link is not None or reverse is not None:
        net.link(CLIENT_ADDR, SERVER_ADDR, link or LinkConfig(), reverse or link or LinkConfig())
    conn = client.endpoint.connect(SERVER_ADDR, net.now)
    return net, client, server, conn
