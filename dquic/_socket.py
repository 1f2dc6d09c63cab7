"""A non-blocking UDP socket for dquic's I/O thread.

``UDPSocket`` wraps one ``socket.socket(AF_INET or AF_INET6, SOCK_DGRAM)`` and gives the driver
the few operations it needs, each one non-blocking and batch-oriented:

* ``recv_batch(n)`` drains up to ``n`` reads (stopping at ``EAGAIN``);
* one way out: a *transmit* is a train ``(data, segment_size, addr)``, one or more datagrams
  back to back (a single datagram is a train of one, ``segment_size`` = its length), as the
  connection builds them. ``queue_trains(trains)`` then ``flush()`` send them (``pending`` says
  whether the kernel left some for later: ``EAGAIN``/``ENOBUFS``); ``send_trains`` does the
  sending and reports how far it got; ``send(data, addr)`` is its one-datagram step;
* ``unreachable()`` reports destinations the kernel learnt were unreachable (ICMP port or host
  unreachable), read from the socket's error queue on Linux (``IP_RECVERR``/``IPV6_RECVERR``).

Addresses are normalised by ``normalize_address`` so the same peer always has the same tuple:
``(host, port)`` for IPv4, and for IPv6 ``(host, port)`` too unless a scope id is needed
(link-local), then ``(host, port, 0, scope_id)``. IPv4 peers reaching a dual-stack IPv6 socket
(``::ffff:a.b.c.d``) are reported as plain IPv4 tuples.

Datagrams never fragment: the socket sets the IP don't-fragment bit (RFC 9000 §14; Linux
``IP_PMTUDISC_PROBE``), so a datagram larger than the route takes is refused or dropped, not cut
into IP fragments; path MTU discovery (PROTOCOL.md §14.7) finds the size that passes, starting
from the local route's MTU (``route_mtu``).

Segmentation offload (Linux): with ``offload=True`` (the default) the socket asks for UDP generic
receive offload (``UDP_GRO``: the kernel hands over runs of equal-size datagrams from one sender
in a single read, reported as ``(data, addr, segment_size)``) and sends runs of equal-size
datagrams to one address with one ``sendmsg`` carrying ``UDP_SEGMENT`` (GSO): the kernel cuts
them into the same datagrams on the wire. Where the kernel or device refuses either, the socket
falls back to one system call per datagram by itself. Set ``DQUIC_NO_OFFLOAD=1`` in the
environment to turn both off everywhere.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from typing import Any, List, Optional, Tuple, Union

BytesLike = Union[bytes, bytearray, memoryview]

__all__ = ["UDPSocket", "normalize_address", "resolve_address", "route_mtu", "set_dont_fragment",
           "DEFAULT_BUFFER_SIZE"]

#: Kernel socket buffer size asked for. Without CAP_NET_ADMIN the kernel caps it at
#: ``net.core.rmem_max`` / ``wmem_max``; raise those for multi-gigabit rates.
DEFAULT_BUFFER_SIZE = 8 << 20
#: Largest datagram read at once.
MAX_DATAGRAM = 65535
#: A first read shorter than this ends a batch: a lone small datagram is interactive traffic,
#: and another read would most likely only meet EAGAIN.
_SMALL_READ = 1000

# Linux constants not exported by the socket module on every version.
_SOL_IP = 0
_IP_RECVERR = 11
_SOL_IPV6 = 41
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_PROBE = 3      # set DF, never fragment, ignore the kernel's own path MTU guess
_IP_MTU = 14
_IPV6_MTU_DISCOVER = 23
_IPV6_PMTUDISC_PROBE = 3
_IPV6_MTU = 24
_SOCK_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
_UNREACHABLE_ERRNOS = frozenset((errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                                 errno.EHOSTDOWN if hasattr(errno, "EHOSTDOWN") else errno.EHOSTUNREACH))
_RETRY_LATER = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR))
# Linux: socket buffer sizes above the sysctl limits (needs CAP_NET_ADMIN).
_SO_SNDBUFFORCE = 32 if sys.platform.startswith("linux") else None
_SO_RCVBUFFORCE = 33 if sys.platform.startswith("linux") else None
# UDP segmentation offload (linux/udp.h); not exported by the socket module.
_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104
_INT = struct.Struct("=i")
_U16 = struct.Struct("=H")
_GRO_ANC_SIZE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
#: Most datagrams the kernel accepts in one GSO send (UDP_MAX_SEGMENTS).
GSO_MAX_SEGMENTS = 64
#: Most bytes in one GSO send (one UDP payload at most).
GSO_MAX_BYTES = 65000
#: A datagram that can never go out this way: dropped (loss recovery copes).
_UNDELIVERABLE = frozenset((errno.EMSGSIZE, errno.EINVAL, errno.EAFNOSUPPORT, errno.ENETUNREACH,
                            errno.EADDRNOTAVAIL, errno.EPERM, errno.EACCES))
#: Errors meaning "this socket/device cannot segment": fall back to one datagram per call.
_GSO_UNSUPPORTED = frozenset((errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT,
                              errno.EMSGSIZE))

Address = Tuple


def normalize_address(addr: Tuple) -> Tuple:
    """The canonical form of a numeric socket address (see the module docstring).

    ``addr`` is what ``recvfrom`` returned or what ``resolve_address`` produced.
    """
    host, port = addr[0], addr[1]
    if ":" in host:
        if host.startswith("::ffff:") and "." in host:
            return (host[7:], port)  # IPv4-mapped (dual-stack socket)
        scope = addr[3] if len(addr) >= 4 else 0
        if "%" in host:  # textual scope, e.g. fe80::1%eth0
            host, _, name = host.partition("%")
            if not scope:
                try:
                    scope = socket.if_nametoindex(name)
                except OSError:
                    scope = int(name) if name.isdigit() else 0
        host = str(ipaddress.IPv6Address(host))
        return (host, port, 0, scope) if scope else (host, port)
    if type(addr) is tuple and len(addr) == 2:
        return addr  # already canonical: share it rather than build an equal tuple
    return (host, port)


def check_address(address: object) -> Tuple[str, int]:
    """Validate the shape of a user-supplied address: a ``(host, port)`` tuple (IPv6 may add
    flowinfo and scope id). Raises ``TypeError``/``ValueError`` before anything is resolved."""
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError("address must be a (host, port) tuple")
    host, port = address[0], address[1]
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii")
    if not isinstance(host, str):
        raise TypeError("host must be a str")
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError("port must be an int")
    if not 0 <= port <= 65535:
        raise ValueError("port must be 0..65535")
    return host, port


_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop


def numeric_address(address: Tuple, family: Optional[int] = None,
                    passive: bool = False) -> Optional[Tuple[int, Tuple]]:
    """``(family, normalized address)`` for addresses that need no name lookup, else None.

    ``passive`` maps '' to the wildcard address of ``family`` (IPv4 by default), for bind.
    """
    host, port = check_address(address)
    if host in ("", "<any>") and passive:
        if family == socket.AF_INET6:
            return socket.AF_INET6, ("::", port)
        return socket.AF_INET, ("0.0.0.0", port)
    if host == "<broadcast>":
        return socket.AF_INET, ("255.255.255.255", port)
    try:
        # an IPv4 address already in canonical form (what peers' addresses are): a tenth of
        # the cost of parsing it with ipaddress (a server answers a new address per client)
        if _inet_ntop(socket.AF_INET, _inet_pton(socket.AF_INET, host)) == host:
            return socket.AF_INET, (host, port)
    except (OSError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if ip.version == 4:
        return socket.AF_INET, (str(ip), port)
    addr = (host, port) if len(address) == 2 else (host, port, address[2], address[3])
    return socket.AF_INET6, normalize_address(addr)


def pick_address(infos: List, host: str, family: Optional[int] = None) -> Tuple[int, Tuple]:
    """Choose from ``getaddrinfo`` results: IPv4 first ('localhost' -> 127.0.0.1) unless
    ``family`` (the family of an existing socket) is IPv6."""
    order = [socket.AF_INET, socket.AF_INET6]
    if family == socket.AF_INET6:
        order.reverse()
    for fam in order:
        for info in infos:
            if info[0] == fam:
                return fam, normalize_address(info[4])
    raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host!r}")


def resolve_address(address: Tuple, family: Optional[int] = None, passive: bool = False) -> Tuple[int, Tuple]:
    """Resolve ``address`` to ``(family, normalized numeric address)``.

    Names resolve with IPv4 preferred ('localhost' -> 127.0.0.1) unless ``family`` is given (the
    family of an existing socket). ``passive`` resolves '' to the wildcard address (for bind).
    Raises ``socket.gaierror`` (an OSError) for unknown names.
    """
    numeric = numeric_address(address, family, passive)
    if numeric is not None:
        return numeric
    host, port = address[0], address[1]
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM, 0,
                               socket.AI_PASSIVE if passive else 0)
    return pick_address(infos, host, family)


def set_dont_fragment(sock: socket.socket, dual_stack: bool = False) -> bool:
    """Set the don't-fragment bit on ``sock``'s datagrams (RFC 9000 §14): IPv4, IPv6, both
    for a dual-stack socket (Linux ``IP_PMTUDISC_PROBE``: never fragment, and ignore the
    kernel's own path MTU guess). True if that is done; elsewhere False, and a driver then
    keeps connections at their base datagram size (no larger datagram may be fragmented)."""
    if not sys.platform.startswith("linux"):
        return False
    if sock.family == socket.AF_INET6:
        opts = [(_SOL_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_PROBE)]
        if dual_stack:
            opts.append((_SOL_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE))
    else:
        opts = [(_SOL_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE)]
    try:
        for level, opt, value in opts:
            sock.setsockopt(level, opt, value)
    except OSError:
        return False
    return True


def no_larger_route(addr: Tuple) -> int:
    """``route_mtu`` for a socket that may fragment: no path MTU discovery (1200)."""
    return 1200


_route_mtus: dict = {}
_ROUTE_MTUS_KEPT = 1024


def route_mtu(addr: Tuple) -> Optional[int]:
    """The largest UDP payload the local route to ``addr`` takes: the outgoing interface's MTU
    less the IP and UDP headers (65507 on loopback, 1472 over IPv4 Ethernet), as the kernel
    reports it for a socket connected there (Linux); None where it cannot tell. Kept per host
    (a socket and three system calls the first time only). Path MTU discovery searches up to
    it (``CoreConnection.set_route_mtu``)."""
    host = addr[0]
    mtu = _route_mtus.get(host, 0)
    if mtu != 0:
        return mtu
    mtu = None
    if sys.platform.startswith("linux"):
        v6 = ":" in host
        try:
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.connect(addr)
                if v6:
                    mtu = s.getsockopt(_SOL_IPV6, _IPV6_MTU) - 48
                else:
                    mtu = s.getsockopt(_SOL_IP, _IP_MTU) - 28
            finally:
                s.close()
        except OSError:
            mtu = None
        if mtu is not None and mtu < 1200:
            mtu = None
    if len(_route_mtus) >= _ROUTE_MTUS_KEPT:
        _route_mtus.clear()
    _route_mtus[host] = mtu
    return mtu


class UDPSocket:
    """One non-blocking UDP socket (see the module docstring).

    Create it for a family, ``bind`` it (optional: the kernel picks a port on first send), then
    use ``recv_batch`` / ``send`` from a single I/O thread and ``fileno()`` for ``select``.
    """

    def __init__(self, family: int = socket.AF_INET, buffer_size: int = DEFAULT_BUFFER_SIZE,
                 dual_stack: bool = False, offload: bool = True,
                 sock: Optional[socket.socket] = None) -> None:
        self.family = socket.AddressFamily(family)  # an enum: its .name goes into messages
        self._v4 = self.family == socket.AF_INET
        # ``sock``: adopt a socket made elsewhere (already bound: workers on one port)
        self.sock = sock if sock is not None else socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            for opt, force in ((socket.SO_SNDBUF, _SO_SNDBUFFORCE), (socket.SO_RCVBUF, _SO_RCVBUFFORCE)):
                # Above net.core.[rw]mem_max only with CAP_NET_ADMIN (the *FORCE options);
                # otherwise the kernel caps the request at that limit.
                try:
                    if force is None:
                        raise OSError(errno.ENOPROTOOPT, "no forced buffer sizes here")
                    self.sock.setsockopt(socket.SOL_SOCKET, force, buffer_size)
                except OSError:
                    try:
                        self.sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
                    except OSError:
                        pass
            self.dual_stack = False
            if family == socket.AF_INET6:
                try:
                    if sock is None:
                        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
                    else:  # fixed when it was bound
                        dual_stack = not self.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                    self.dual_stack = dual_stack
                except OSError:
                    pass
            self._recverr = False
            #: datagrams leave with the don't-fragment bit (else path MTU discovery is off)
            self.dont_fragment = set_dont_fragment(self.sock, self.dual_stack)
            if sys.platform.startswith("linux"):
                level, opt = (_SOL_IPV6, _IPV6_RECVERR) if family == socket.AF_INET6 else (_SOL_IP, _IP_RECVERR)
                try:
                    self.sock.setsockopt(level, opt, 1)
                    self._recverr = True
                except OSError:
                    pass
                if family == socket.AF_INET6 and self.dual_stack:
                    try:
                        self.sock.setsockopt(_SOL_IP, _IP_RECVERR, 1)
                    except OSError:
                        pass
            self.gso = self.gro = False
            if offload and sys.platform.startswith("linux") and not os.environ.get("DQUIC_NO_OFFLOAD"):
                try:
                    self.sock.getsockopt(_SOL_UDP, _UDP_SEGMENT)
                    self.gso = True
                except OSError:
                    pass
                try:
                    self.sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
                    self.gro = True
                except OSError:
                    pass
        except BaseException:
            self.sock.close()
            raise
        #: ICMP reports not yet taken by ``unreachable()`` (a driver tests it before calling)
        self.unreachable_reports: List[Tuple[Tuple, int]] = []
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.send_retries = 0
        self.gso_sends = 0
        self._queue: List[Tuple[BytesLike, int, Tuple]] = []
        self._queue_i = 0
        self._queue_off = 0
        #: Whether queued trains wait for the kernel (the socket was full): kept by
        #: ``queue_trains``/``flush``/``send_now`` (a plain attribute: the driver reads it
        #: several times per step).
        self.pending = False
        self.closed = False

    # ----------------------------------------------------------------------------------------
    def bind(self, address: Tuple) -> None:
        """Bind to a numeric ``address`` (from ``resolve_address``)."""
        self.sock.bind(address)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def local_address(self) -> Tuple:
        """The bound address, normalised (port 0 until bound or first send)."""
        return normalize_address(self.sock.getsockname())

    @property
    def buffer_sizes(self) -> Tuple[int, int]:
        """``(SO_SNDBUF, SO_RCVBUF)`` as granted by the kernel."""
        return (self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def to_wire(self, addr: Tuple) -> Tuple:
        """The address to pass to ``sendto`` for a normalised ``addr``."""
        if self.family == socket.AF_INET6 and ":" not in addr[0]:
            if not self.dual_stack:
                raise OSError(errno.EAFNOSUPPORT, "IPv4 destination on an IPv6-only socket")
            return ("::ffff:" + addr[0], addr[1])
        if self.family == socket.AF_INET and ":" in addr[0]:
            raise OSError(errno.EAFNOSUPPORT, "IPv6 destination on an IPv4 socket")
        return addr

    # ----------------------------------------------------------------------------------------
    def recv_batch(self, max_count: int = 64) -> List[Tuple[bytes, Tuple, int]]:
        """Read up to ``max_count`` times without blocking: ``[(data, normalized_addr, segment_size)]``
        (after one lone small datagram, only that: the caller's ``select`` finds the rest).

        ``segment_size`` is 0 for a single datagram; with receive offload a read may return a
        run of datagrams packed back to back, each ``segment_size`` bytes (the last may be
        shorter): ``Endpoint.receive_segments`` takes them apart. ICMP errors met on the way
        are recorded for ``unreachable()``; other errors stop the batch (the socket stays
        usable).
        """
        gro = self.gro
        first = None
        if gro:
            # the first read, lean: a lone small datagram (interactive traffic, a request or a
            # reply) is the whole batch, and the caller wants it as soon as possible
            try:
                first = self.sock.recvmsg(MAX_DATAGRAM, _GRO_ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return []
            except OSError as exc:
                if exc.errno not in _UNREACHABLE_ERRNOS:
                    return []
                self._drain_error_queue(exc.errno)
            else:
                if not first[1] and len(first[0]) < _SMALL_READ:
                    self.datagrams_received += 1
                    addr = first[3]
                    return [(first[0], addr if self._v4 else normalize_address(addr), 0)]
        out: List[Tuple[bytes, Tuple, int]] = []
        v6 = self.family == socket.AF_INET6
        recvmsg: Any = self.sock.recvmsg if gro else None  # no recvmsg on Windows
        recvfrom = self.sock.recvfrom
        count = 0
        for _ in range(max_count):
            if first is not None:
                data, ancdata, _flags, addr = first  # (read above)
                first = None
            else:
                try:
                    if gro:
                        data, ancdata, _flags, addr = recvmsg(MAX_DATAGRAM, _GRO_ANC_SIZE)
                    else:
                        data, addr = recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in _UNREACHABLE_ERRNOS:
                        self._drain_error_queue(exc.errno)
                        continue
                    break
            seg = 0
            if gro and ancdata:
                for level, ctype, cdata in ancdata:
                    if level == _SOL_UDP and ctype == _UDP_GRO and len(cdata) >= 4:
                        seg = _INT.unpack_from(cdata)[0]
            if seg and seg < len(data):
                count += (len(data) + seg - 1) // seg
            else:
                seg = 0
                count += 1
            out.append((data, normalize_address(addr) if v6 else addr, seg))
            if not seg and count == 1 and len(data) < _SMALL_READ:
                break  # interactive traffic: one small datagram; select finds any other
        self.datagrams_received += count
        return out

    def _drain_error_queue(self, default_errno: int) -> None:
        """Move queued ICMP errors (Linux error queue) into ``unreachable_reports``."""
        if not self._recverr:
            return
        for _ in range(64):
            try:
                _, ancdata, _, addr = self.sock.recvmsg(1, 512, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            err = default_errno
            for level, ctype, cdata in ancdata:
                if len(cdata) >= _SOCK_EE.size and (level, ctype) in (
                        (_SOL_IP, _IP_RECVERR), (_SOL_IPV6, _IPV6_RECVERR)):
                    err = _SOCK_EE.unpack_from(cdata)[0]
            if addr and err in _UNREACHABLE_ERRNOS:
                self.unreachable_reports.append((normalize_address(addr), err))

    def unreachable(self) -> List[Tuple[Tuple, int]]:
        """Destinations reported unreachable since the last call: ``[(addr, errno)]``."""
        out, self.unreachable_reports = self.unreachable_reports, []
        return out

    # ----------------------------------------------------------------------------------------
    def send(self, data: BytesLike, addr: Tuple) -> bool:
        """Send one datagram. False when the kernel cannot take it now (retry later)."""
        try:
            self.sock.sendto(data, self.to_wire(addr))
        except OSError as exc:
            return bool(self._send_failed(exc, addr, False))
        self.datagrams_sent += 1
        return True

    def _send_failed(self, exc: OSError, addr: Tuple, gso: bool) -> Optional[bool]:
        """What a failed send means: False (the kernel is full: retry later), True (dropped
        for good: loss recovery copes) or, for a GSO send, None (the kernel or device cannot
        segment: offload is now off). Other errors propagate."""
        code = exc.errno
        if code in _RETRY_LATER or isinstance(exc, BlockingIOError):
            self.send_retries += 1
            return False
        if code in _UNREACHABLE_ERRNOS:
            # an earlier ICMP error surfaced here; record it, the datagram is dropped
            self._drain_error_queue(code)
            if not self._recverr:
                self.unreachable_reports.append((addr, code))
            return True
        if gso and code in _GSO_UNSUPPORTED:
            self.gso = False
            return None
        if code in _UNDELIVERABLE:
            return True
        raise exc

    def _send_gso(self, data, size: int, addr: Tuple, count: int) -> Optional[bool]:
        """Send ``data`` as datagrams of ``size`` bytes (the last may be shorter) in one call:
        as ``_send_failed`` says, or True."""
        try:
            self.sock.sendmsg([data], [(_SOL_UDP, _UDP_SEGMENT, _U16.pack(size))], 0, self.to_wire(addr))
        except OSError as exc:
            return self._send_failed(exc, addr, True)
        self.datagrams_sent += count
        self.gso_sends += 1
        return True

    def send_trains(self, items: List[Tuple[BytesLike, int, Tuple]], start: int = 0,
                    offset: int = 0) -> Tuple[int, int]:
        """Send trains ``(data, segment_size, addr)`` from ``items[start]`` at byte ``offset``
        on (see ``Endpoint.trains_to_send``): one ``sendmsg`` per train with send offload,
        else one ``sendto`` per datagram. Returns ``(index, offset)`` of the first datagram
        the kernel did not take (``(len(items), 0)`` when all went out); stops at the first
        ``EAGAIN``/``ENOBUFS``."""
        send = self.send
        i = start
        n = len(items)
        while i < n:
            data, seg, addr = items[i]
            size = len(data)
            if size > seg and offset == 0 and self.gso:
                sent = self._send_gso(data, seg, addr, -(-size // seg))
                if sent is None:
                    continue  # offload turned off: the same train one datagram at a time
                if not sent:
                    return i, 0
                i += 1
                continue
            if size <= seg:
                if not send(data, addr):
                    return i, 0
            else:
                view = memoryview(data)
                while offset < size:
                    if not send(view[offset:offset + seg], addr):
                        return i, offset
                    offset += seg
                offset = 0
            i += 1
        return n, 0

    # ----------------------------------------------------------------------------------------
    # trains the kernel has not taken yet (``pending``), kept in order for the next flush()
    def queue_trains(self, trains: List[Tuple[BytesLike, int, Tuple]]) -> None:
        """Queue trains ``(data, segment_size, addr)`` behind any still waiting; ``flush()``
        sends them."""
        if self.pending:
            self._queue.extend(trains)
        elif trains:
            self._queue, self._queue_i, self._queue_off = trains, 0, 0
            self.pending = True

    def flush(self) -> int:
        """Send queued trains until they are all out or the kernel is full (then call again
        once the socket is writable); returns how many datagrams went out."""
        if not self.pending:
            return 0
        before = self.datagrams_sent
        i, off = self.send_trains(self._queue, self._queue_i, self._queue_off)
        if i >= len(self._queue):
            self._queue, self._queue_i, self._queue_off = [], 0, 0
            self.pending = False
        else:
            self._queue_i, self._queue_off = i, off
        return self.datagrams_sent - before

    def send_now(self, trains: List[Tuple[BytesLike, int, Tuple]]) -> int:
        """``queue_trains`` then ``flush``, in one call when nothing waits already: a lone
        datagram (a request, a reply, an ACK) goes straight to ``sendto``; what the kernel
        refuses stays queued (``pending``). Returns how many datagrams went out."""
        if not self.pending and len(trains) == 1:
            data, seg, addr = trains[0]
            if len(data) <= seg:
                try:
                    self.sock.sendto(data, addr if self._v4 and ":" not in addr[0]
                                     else self.to_wire(addr))
                except OSError as exc:
                    if not self._send_failed(exc, addr, False):
                        self._queue, self._queue_i, self._queue_off = trains, 0, 0
                        self.pending = True
                        return 0
                    return 0  # dropped for good (loss recovery copes)
                self.datagrams_sent += 1
                return 1
        self.queue_trains(trains)
        return self.flush()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            self.sock.close()


class Waker:
    """A file descriptor another thread can make readable to interrupt a ``select``.

    An eventfd on Linux; elsewhere a connected socket pair (``select`` on Windows accepts only
    sockets, so a pipe would not do). ``fileno()`` is what to select on; ``wake()`` may be called
    from any thread; ``drain()`` from the selecting thread after it saw the descriptor readable.
    """

    def __init__(self) -> None:
        self._eventfd = hasattr(os, "eventfd")
        # the socket pair, where there is no eventfd (never read when there is one)
        self._pair: Tuple[socket.socket, socket.socket] = None  # type: ignore[assignment]
        if self._eventfd:
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            self._pair = (r, w)
            self._fd = r.fileno()
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def wake(self) -> None:
        if self.closed:
            return
        try:
            if self._eventfd:
                os.eventfd_write(self._fd, 1)
            else:
                self._pair[1].send(b"\x01")
        except (BlockingIOError, InterruptedError, OSError):
            pass  # already readable (buffer full) or closing: nothing more to do

    def drain(self) -> None:
        try:
            if self._eventfd:
                os.eventfd_read(self._fd)
            else:
                while self._pair[0].recv(4096):
                    pass
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._eventfd:
            try:
                os.close(self._fd)
            except OSError:
                pass
        else:
            for s in self._pair:
                s.close()
