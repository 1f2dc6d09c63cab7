# cython: language_level=3
"""The busy-poll wait of ``dquic._busypoll``, in C with the GIL released: look at up to three
descriptors without sleeping until one is ready or the time is up, yielding the CPU between
looks, and give up as soon as a yield shows that another task wants the CPU. Other Python threads (a second endpoint in the same process, the application's own) run
meanwhile; a Python loop of ``select`` calls would hold the GIL between them."""

__all__ = ["AVAILABLE", "CONTENDED", "READY_A", "READY_B", "READY_W", "poll_ready"]

cdef extern from *:
    """
    #if defined(_WIN32)
    #define DQUIC_POLL_AVAILABLE 0
    static int dquic_poll_ready(int a, int b, int w, double seconds) {
        (void)a; (void)b; (void)w; (void)seconds;
        return -1;
    }
    #else
    #define DQUIC_POLL_AVAILABLE 1
    #include <errno.h>
    #include <poll.h>
    #include <sched.h>
    #include <time.h>
    static double dquic_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    /* which are ready (1: a, 2: b, 4: w), 0: the time is up, -2: the CPU is wanted (a yield
       let another task run for longer than DQUIC_YIELD_CONTENDED seconds), -1: poll failed */
    #define DQUIC_YIELD_CONTENDED 20e-6
    static int dquic_poll_ready(int a, int b, int w, double seconds) {
        struct pollfd fds[3];
        int bit[3];
        int n = 0, r, i, ready;
        double now, end = dquic_monotonic() + seconds;
        if (a >= 0) { fds[n].fd = a; fds[n].events = POLLIN; fds[n].revents = 0; bit[n++] = 1; }
        if (b >= 0) { fds[n].fd = b; fds[n].events = POLLIN; fds[n].revents = 0; bit[n++] = 2; }
        if (w >= 0) { fds[n].fd = w; fds[n].events = POLLOUT; fds[n].revents = 0; bit[n++] = 4; }
        for (;;) {
            r = poll(fds, (nfds_t)n, 0);
            if (r > 0) {
                ready = 0;
                for (i = 0; i < n; i++)
                    if (fds[i].revents)
                        ready |= bit[i];
                return ready;
            }
            if (r < 0 && errno != EINTR)
                return -1;
            now = dquic_monotonic();
            if (now >= end)
                return 0;
            sched_yield();
            if (dquic_monotonic() - now > DQUIC_YIELD_CONTENDED)
                return -2;
        }
    }
    #endif
    """
    int DQUIC_POLL_AVAILABLE
    int dquic_poll_ready(int a, int b, int w, double seconds) nogil

#: False where the wait is not built (Windows): the drivers then never poll.
AVAILABLE = bool(DQUIC_POLL_AVAILABLE)
#: What ``poll_ready`` returns: bits of the descriptors ready, or the CPU is wanted elsewhere.
READY_A = 1
READY_B = 2
READY_W = 4
CONTENDED = -2


def poll_ready(int a, int b, int w, double seconds):
    """Poll descriptors ``a`` and ``b`` for reading and ``w`` for writing (-1: none) without
    sleeping, for up to ``seconds``, the GIL released, yielding the CPU between looks: which
    are ready (``READY_A | READY_B | READY_W``), 0 if the time ran out, ``CONTENDED`` (-2) if
    the CPU is wanted elsewhere (a yield let another task run for more than 20 us: polling
    would take the CPU from it), -1 if polling failed (or is not available here)."""
    cdef int r
    with nogil:
        r = dquic_poll_ready(a, b, w, seconds)
    return r
