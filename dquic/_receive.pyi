"""Type stub of dquic._receive (the receive path of the core connection; compiled)."""
from typing import Any, Callable, Dict, List, Optional, Tuple

from dquic._codec import Buffer
from dquic._establish import ConnectionSetup

__all__ = ["PacketReceiver"]

RECV_SCRATCH: Buffer
FRAME_HANDLERS: Dict[int, Callable[..., None]]

class PacketReceiver(ConnectionSetup):  # adds no C fields: not a disjoint base
    def receive_datagram(self, data: Any, addr: Tuple[Any, ...], now: float) -> None: ...
    def receive_segments(self, data: Any, segment_size: int, addr: Tuple[Any, ...], now: float) -> int: ...
    # stateless reset (RFC 9000 §10.3)
    def peer_reset_tokens(self) -> List[bytes]: ...
    @property
    def reset_token(self) -> Optional[bytes]: ...
    def is_stateless_reset(self, datagram: Any) -> bool: ...
    def on_stateless_reset(self, now: float) -> None: ...
