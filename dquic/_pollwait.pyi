"""Type stub of dquic._pollwait (the busy-poll wait; compiled)."""

__all__ = ["AVAILABLE", "poll_ready"]

AVAILABLE: bool

def poll_ready(a: int, b: int, w: int, seconds: float) -> int: ...
