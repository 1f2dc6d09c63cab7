"""Type stub of dquic._packet (building and sealing packets; compiled). Its API is C-level
(cimported through _packet.pxd); it has no Python-level names."""
from typing import List

__all__: List[str]
