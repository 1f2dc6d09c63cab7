# cython: language_level=3
"""Connection IDs of one connection (RFC 9000 §5.1; compiled).

Theory of operation
-------------------
A ``CidState`` holds both sides' connection IDs: ours (``host_cids``, by sequence number; the
peer puts one of them in the destination field of its packets, ``host_cid`` being the one it
used last that we know of) and the peer's (``peer_cids``: ID and stateless reset token by
sequence number; ``peer_cid`` is the one we address it with now).

It owes the peer two kinds of frame, kept as queues of sequence numbers: NEW_CONNECTION_ID for
IDs we issue (``issue``, ``issue_spares`` after the handshake, a fresh one for each the peer
retires) and RETIRE_CONNECTION_ID for the peer's IDs we stop using (``retire_peer_cid``, on a
switch or when the peer asks with retire_prior_to). A retirement stays in ``retiring`` until
it is acknowledged, and a peer that makes us retire IDs faster than it acknowledges the
retirements is a protocol error (CONNECTION_ID_LIMIT_ERROR), as is one that gives more IDs than
our active_connection_id_limit: what the peer makes us keep is bounded.

Every change the endpoint's routing needs (an ID of ours added or removed, a peer reset token
in use or no longer) is appended to ``changes`` for the endpoint to collect.

The connection writes the frames (it builds the packets) and forwards the peer's frames here;
errors are raised as ``ProtocolError`` for it to turn into CONNECTION_CLOSE. Nothing here knows
the connection.
"""
from dquic._spaces cimport q_clear, q_push

from dquic.errors import ErrorCode, ProtocolError

__all__ = ["CidState"]


cdef class CidState:
    """The connection IDs of one connection, ours and the peer's (see the module docstring)."""

    def __init__(self, config, random_bytes, host_cid, peer_cid, bint peer_cid_set_by_server):
        self._config = config
        self._random = random_bytes
        self._cid_len = config.connection_id_length
        self._active_limit = config.active_connection_id_limit
        self.host_cid = host_cid
        self.host_cids = {0: host_cid}
        self.host_cid_seq = 0
        self.changes = [("add", host_cid)]
        self.peer_cid = peer_cid
        self.peer_cids = {0: (peer_cid, None)}
        self.peer_cid_seq = 0
        self.retired_below = 0
        self.retiring = None  # a set once the first peer ID is retired
        self.peer_cid_set_by_server = peer_cid_set_by_server

    def __dealloc__(self):
        q_clear(&self.new_cids)
        q_clear(&self.retire_cids)

    cdef void change(self, object item):
        # the list is made on first use and dropped once emptied (by the endpoint): most
        # connections are idle with nothing to report, and an empty list costs ~72 bytes
        if self.changes is None:
            self.changes = []
        self.changes.append(item)

    cdef bint knows(self, object cid):
        """``cid`` is one of the connection IDs we issued and did not retire."""
        return cid in self.host_cids.values()

    def peer_reset_tokens(self):
        """Stateless reset tokens the peer gave us (one per connection ID of the peer)."""
        return [tok for _, tok in self.peer_cids.values() if tok]

    @property
    def reset_token(self):
        """The reset token of the peer's ID in use (None if the peer gave none)."""
        entry = self.peer_cids.get(self.peer_cid_seq)
        return None if entry is None else entry[1]

    cdef int issue(self) except -1:
        """A new connection ID of ours, announced with NEW_CONNECTION_ID."""
        self.host_cid_seq += 1
        cid = self._config.new_connection_id(self._random)
        self.host_cids[self.host_cid_seq] = cid
        q_push(&self.new_cids, <uint64_t>self.host_cid_seq)
        self.change(("add", cid))
        return 0

    cdef int issue_spares(self, Py_ssize_t limit) except -1:
        """Issue IDs until we have ``limit`` (for migration, RFC 9000 §5.1.1)."""
        while len(self.host_cids) < limit:
            self.issue()
        return 0

    cdef bint switch_peer_cid(self) except -1:
        """Move to an unused peer connection ID (after retirement or on a new path); the one
        left is retired. False if the peer gave no other."""
        for seq in sorted(self.peer_cids):
            if seq > self.peer_cid_seq:
                old_seq = self.peer_cid_seq
                self.peer_cid_seq = seq
                self.peer_cid, token = self.peer_cids[seq]
                if token:
                    # a reset token counts only once we use its ID (RFC 9000 §10.3.1)
                    self.change(("reset", token))
                if old_seq in self.peer_cids:
                    token = self.peer_cids.pop(old_seq)[1]
                    if token:
                        self.change(("unreset", token))
                    self.retire_peer_cid(old_seq)
                return True
        return False

    cdef int retire_peer_cid(self, uint64_t seq) except -1:
        """Owe RETIRE_CONNECTION_ID for the peer's ID ``seq`` until it is acknowledged. A peer
        that makes us retire IDs faster than it acknowledges the retirements would grow that
        list without end: past 4x active_connection_id_limit (at least 16) unacknowledged
        retirements the connection closes with CONNECTION_ID_LIMIT_ERROR (RFC 9000 §5.1.2)."""
        if self.retiring is None:
            self.retiring = set()
        self.retiring.add(seq)
        if len(self.retiring) > max(16, 4 * self._active_limit):
            raise ProtocolError("the peer retires connection IDs faster than it acknowledges "
                                "the retirements", ErrorCode.CONNECTION_ID_LIMIT_ERROR)
        q_push(&self.retire_cids, seq)
        return 0

    cdef int server_chose(self, object scid) except -1:
        """Client: the server's first packet (or Retry) names the ID to address it with."""
        self.peer_cid = scid
        self.peer_cids[0] = (scid, None)
        return 0

    def set_peer_reset_token(self, token):
        """The reset token of the peer's first ID (its transport parameters)."""
        self.peer_cids[0] = (self.peer_cid, token)
        if token:
            self.change(("reset", token))

    cdef int on_new_connection_id(self, uint64_t seq, object cid, object token,
                                  uint64_t retire_prior_to) except -1:
        if not self.peer_cid:
            raise ProtocolError("NEW_CONNECTION_ID to a peer using zero-length IDs",
                                ErrorCode.PROTOCOL_VIOLATION)
        known = self.peer_cids.get(seq)
        if known is not None:
            if known[0] != cid:
                raise ProtocolError("NEW_CONNECTION_ID reuses a sequence number",
                                    ErrorCode.PROTOCOL_VIOLATION)
            return 0
        if <long long>seq >= self.retired_below:
            # its reset token counts only once we use the ID (RFC 9000 §10.3.1: not for IDs
            # we have not used): switch_peer_cid reports it then
            self.peer_cids[seq] = (cid, token)
        if retire_prior_to > 0:
            for old in [q for q in self.peer_cids if q < retire_prior_to]:
                old_cid, old_token = self.peer_cids.pop(old)
                if old_token:
                    self.change(("unreset", old_token))
                self.retire_peer_cid(old)
                if old_cid == self.peer_cid:
                    self.switch_peer_cid()
            if <long long>retire_prior_to > self.retired_below:
                self.retired_below = retire_prior_to
        if len(self.peer_cids) > self._active_limit:
            raise ProtocolError("too many connection IDs", ErrorCode.CONNECTION_ID_LIMIT_ERROR)
        return 0

    cdef int on_retire_connection_id(self, uint64_t seq) except -1:
        if <long long>seq > self.host_cid_seq:
            raise ProtocolError("RETIRE_CONNECTION_ID for an unissued ID", ErrorCode.PROTOCOL_VIOLATION)
        cid = self.host_cids.get(seq)
        if cid is None:
            return 0
        if len(self.host_cids) == 1:
            return 0  # never retire the last one
        del self.host_cids[seq]
        self.change(("remove", cid))
        if cid == self.host_cid:
            self.host_cid = next(iter(self.host_cids.values()))
        self.issue()
        return 0

    cdef int on_retire_acked(self, uint64_t seq) except -1:
        if self.retiring is not None:
            self.retiring.discard(seq)
        return 0

    cdef int on_new_cid_lost(self, uint64_t seq) except -1:
        if seq in self.host_cids:
            q_push(&self.new_cids, seq)
        return 0

    cdef int on_retire_lost(self, uint64_t seq) except -1:
        if self.retiring is not None and seq in self.retiring:  # not acked by another copy
            q_push(&self.retire_cids, seq)
        return 0
