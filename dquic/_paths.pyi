"""Type stub of dquic._paths (the network path of one connection; compiled)."""
from typing import Any, Optional, Tuple
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

__all__ = ["PathState", "MAX_PENDING_PATH_RESPONSES"]

MAX_PENDING_PATH_RESPONSES: int

@disjoint_base
class PathState:
    peer_addr: Tuple[Any, ...]
    previous_addr: Optional[Tuple[Any, ...]]
    bytes_received: int
    bytes_sent: int
    validated: bool
    challenge: Optional[Tuple[bytes, Tuple[Any, ...], float]]
    def __init__(self, peer_addr: Tuple[Any, ...], validated: bool) -> None: ...
