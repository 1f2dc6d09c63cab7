"""Helpers of the tests over real sockets and processes (importable from tests/ and tests/io/
as a plain module; tests/conftest.py puts tests/ on the import path)."""
from __future__ import annotations

import socket


def ipv6_available() -> bool:
    """True if a UDP socket can bind the IPv6 loopback address."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (bound, then released): nothing
    listens there, so a datagram sent to it draws an ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_port_bound(port: int) -> bool:
    """True if some socket is bound to UDP ``port`` on 127.0.0.1 or the wildcard (Linux /proc)."""
    hexport = "%04X" % port
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                if any(line.split()[1].rsplit(":", 1)[1] == hexport for line in f):
                    return True
        except OSError:
            continue
    return False
