"""Type stub of dquic._pollwait (the busy-poll wait; compiled)."""

__all__ = ["AVAILABLE", "CONTENDED", "READY_A", "READY_B", "READY_W", "poll_ready"]

AVAILABLE: bool
READY_A: int
READY_B: int
READY_W: int
CONTENDED: int

def poll_ready(a: int, b: int, w: int, seconds: float) -> int: ...
