"""Type stub of dquic._establish (the root of the core connection's class chain: its state
and establishment; compiled)."""
from typing import Any, Dict, List, Optional, Tuple
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

from dquic._cids import CidState
from dquic._congestion import CongestionController
from dquic._paths import PathState
from dquic._recovery import Recovery
from dquic._sender import Sender
from dquic._spaces import _Space
from dquic._streamset import StreamSet
from dquic.config import Configuration

__all__ = ["ConnectionSetup"]

class _PlainHandshake:
    complete: bool
    peer_static: Optional[bytes]
    peer_transport_params: Optional[bytes]
    def __init__(self, is_client: bool, transport_params: bytes) -> None: ...
    def start(self) -> bytes: ...
    def receive(self, message: bytes) -> Optional[bytes]: ...
    def protections(self, **_: Any) -> Tuple[Any, Any]: ...

@disjoint_base
class ConnectionSetup:
    config: Configuration
    is_client: bool
    original_dcid: Optional[bytes]
    peer_key: Optional[bytes]
    packets_received: int
    packets_dropped: int
    duplicate_packets: int
    bytes_sent: int
    bytes_received: int
    # internals kept visible for tests and tools
    _spaces: List[_Space]
    _sset: StreamSet
    _tx: Sender
    _recovery: Recovery
    _cc: CongestionController
    _seal: List[Any]
    _open: List[Any]
    _retry_scid: Optional[bytes]
    _qlog: Any
    _work: Optional[Dict[Any, Any]]  # the driving endpoint's connections with output to build
    _cids: CidState
    _paths: PathState

