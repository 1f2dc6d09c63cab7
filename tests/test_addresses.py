"""Address parsing of the drivers (``dquic._socket``): numeric addresses need no lookup, and
the quick path for canonical IPv4 gives exactly what the general one gives."""
from __future__ import annotations

import ipaddress
import socket

from hypothesis import given, strategies as st

from dquic._socket import numeric_address


def _general(host: str, port: int):
    # what numeric_address answered before its quick path (ipaddress for every host)
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    return (socket.AF_INET, (str(ip), port)) if ip.version == 4 else "v6"


@given(st.tuples(*[st.integers(0, 255)] * 4), st.integers(0, 65535))
def test_canonical_ipv4_is_taken_as_is(octets, port):
    host = "%d.%d.%d.%d" % octets
    assert numeric_address((host, port)) == (socket.AF_INET, (host, port)) == _general(host, port)


@given(st.text(alphabet="0123456789.x:% \x00", max_size=18), st.integers(0, 65535))
def test_other_hosts_answer_as_the_general_parse(host, port):
    want = _general(host, port)
    try:
        got = numeric_address((host, port))
    except ValueError:
        assert want == "v6"  # (an IPv6 scope that cannot be a name: as before)
        return
    if want == "v6":
        assert got is not None and got[0] == socket.AF_INET6
    else:
        assert got == want, (host, got, want)


def test_names_and_non_canonical_forms():
    assert numeric_address(("localhost", 1)) is None
    assert numeric_address(("1.2.3.04", 1)) is None  # leading zeros: not an address here
    assert numeric_address(("1.2.3", 1)) is None
    assert numeric_address(("::1", 1))[0] == socket.AF_INET6
    assert numeric_address(("", 5), passive=True) == (socket.AF_INET, ("0.0.0.0", 5))
