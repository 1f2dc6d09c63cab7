"""Type stub of dquic._cids (one connection's connection IDs; compiled)."""
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from typing_extensions import disjoint_base  # cdef classes: no multiple inheritance

__all__ = ["CidState"]

@disjoint_base
class CidState:
    host_cid: bytes
    peer_cid: bytes
    host_cids: Dict[int, bytes]
    host_cid_seq: int
    peer_cids: Dict[int, Tuple[bytes, Optional[bytes]]]
    peer_cid_seq: int
    retired_below: int
    retiring: Optional[Set[int]]
    peer_cid_set_by_server: bool
    changes: Optional[List[Tuple[str, bytes]]]
    def __init__(self, config: Any, random_bytes: Callable[[int], bytes], host_cid: bytes,
                 peer_cid: bytes, peer_cid_set_by_server: bool) -> None: ...
    def peer_reset_tokens(self) -> List[bytes]: ...
    @property
    def reset_token(self) -> Optional[bytes]: ...
    def set_peer_reset_token(self, token: Optional[bytes]) -> None: ...
