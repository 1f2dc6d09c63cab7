# The timer table of a connection (compiled into each module that cimports it; no module of
# its own): one deadline per timer kind, filled by CoreConnection._fill_timers from the state
# that owns each deadline, so the next deadline is one minimum over the table and an expiry
# is dispatched by kind (CoreConnection.handle_timer).

cdef enum:
    TIMER_LOSS = 0             # loss detection / probe timeout (RFC 9002 §6)
    TIMER_ACK_HANDSHAKE = 1    # delayed ACK, handshake space
    TIMER_ACK = 2              # delayed ACK, application space
    TIMER_PACING = 3           # the pacer lets the next packet go
    TIMER_HANDSHAKE = 4        # the handshake must be done by then
    TIMER_IDLE = 5             # idle timeout (RFC 9000 §10.1)
    TIMER_KEEP_ALIVE = 6       # send a PING
    TIMER_PATH_VALIDATION = 7  # PATH_CHALLENGE unanswered
    TIMER_OLD_KEYS = 8         # drop the keys of the previous key phase
    TIMER_CLOSE = 9            # closing or draining period over
    TIMER_STREAM_IDLE = 10     # end our halves whose messages were all acknowledged 3 PTO ago
    TIMER_IDLE_RELEASE = 11    # quiet for a while: give back idle memory (_release_idle)
    TIMER_KINDS = 12


cdef inline double earliest(const double* t) noexcept:
    """The earliest armed deadline of a table (< 0 when none is armed)."""
    cdef double best = -1.0
    cdef int i
    for i in range(TIMER_KINDS):
        if t[i] >= 0.0 and (best < 0.0 or t[i] < best):
            best = t[i]
    return best


cdef inline tuple timer_names():
    """Each kind's name, by kind (``CoreConnection.timers``)."""
    return ("loss", "ack_handshake", "ack", "pacing", "handshake", "idle", "keep_alive",
            "path_validation", "old_keys", "close", "stream_idle", "idle_release")
