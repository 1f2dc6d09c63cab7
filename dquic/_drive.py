"""Who drives the sans-IO endpoint of a blocking ``dquic.sync.DQUIC``: the driver's role, its
hand-over between the API threads and the I/O thread, and the driving itself.

The sans-IO core is driven by one thread at a time, the *driver*: it waits in ``select`` on the
UDP socket and a wake-up file descriptor (with the core's next timer as timeout), reads what
arrived (``RECV_BATCH`` reads at most), feeds it to the endpoint, runs due timers, sends what
the endpoint produced (keeping what the kernel refused for later) and lets the ``DQUIC`` turn
the core's events into the state its API calls wait on. An API call that waits first polls the
socket for the busy-poll budget (``dquic._busypoll``: up to ``busy_poll`` seconds, learnt from
how recent waits ended) before it sleeps in ``select``, when something was sent since the last
such wait (an answer may come); the I/O thread never polls.

The role (``Drive.holder``, the ident of the thread that drives, or None) is in one of three
states, and every change of state is one of the methods below:

* free (``holder`` None): nobody drives. The I/O thread takes the role once no API call has
  held it for ``IDLE_HANDOVER`` seconds, or at once when work waits (trains the kernel refused,
  work queued while another thread drove, closing). (A socket made by a ``send_to`` gets its
  I/O thread when that call first gives the role up, so that starting a thread is not between
  the call and its first datagram; ``bind`` starts it at once.)
* held by an API call: a call that has to wait takes the free role (``drive_or_wait``: the
  ``epoch`` counts these takings) and drives itself, so a reply is read, processed and handed
  over in the thread that asked for it; a call that only queues work takes it for one step or
  one flush (``kick``). The call gives it back when it ends (``end_call``: what it queued is
  sent, and the I/O thread is told if work waits or it sleeps).
* held by the I/O thread (``io_loop``): an API thread that needs the role asks for it
  (``want_handover``, through the wake-up descriptor) and the I/O thread lets go after its
  current step. While the same API call keeps the role for long (a ``receive_from`` waiting
  for data), the I/O thread sleeps (``io_asleep``) until that call ends.

``close()`` does not wait for an I/O thread parked between steps (``io_parked``: waiting on
``io_cond``, in no socket call): it sends what is left itself and tells the thread to end
without touching the socket or the wake-up descriptor again (``detach_io``); otherwise it
stops the thread and joins it. A ``close()`` of a socket no application bound returns once its
CONNECTION_CLOSEs are sent and leaves the peers' answers, and closing the socket, to the I/O
thread (``finish_in_background``, ``finishing``).

Two flags carry work across the hand-over: ``flush_needed`` (work was queued while another
thread drove: the driver sends it at its next step) and ``deferred_flush`` (acknowledgements of
a step whose data a ``receive_from`` is about to hand out wait for the application's reply, for
one step at most; the messages of a burst of ``send_to`` calls wait to fill a datagram, see
``DQUIC``'s ``nodelay``). Whatever waits goes with the next API call or when the I/O thread
takes the role. API threads wait on ``cond`` (counted in ``waiters``, so notifications go
only where somebody waits), the I/O thread on ``io_cond``; both share the ``DQUIC``'s lock. The
driver's socket calls run without the lock and release the GIL.
"""
from __future__ import annotations

import atexit
import os
import select
import threading
import time
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from ._busypoll import BusyPoll, can_poll
from ._pollwait import CONTENDED, READY_A, READY_B, poll_ready
from ._socket import UDPSocket, Waker

__all__ = ["Drive", "RECV_BATCH", "IDLE_HANDOVER", "STEP_INTERVAL"]

#: Socket reads per driving step before the endpoint processes them.
RECV_BATCH = 64
#: Seconds without an API call driving the core before the I/O thread takes over.
IDLE_HANDOVER = 0.002
#: A call that only queues work also reads the socket if nobody has for this long.
STEP_INTERVAL = 0.0005
_monotonic = time.monotonic

#: Drives whose I/O thread completes a ``close()`` after it returned (``finish_in_background``;
#: changed and read under ``_FINISHING_LOCK``: the I/O threads leave it as they end).
_FINISHING: "weakref.WeakSet[Drive]" = weakref.WeakSet()
_FINISHING_LOCK = threading.Lock()


def _forget_finishing_in_child() -> None:
    # a forked child has none of its parent's I/O threads, and the lock may have been held
    global _FINISHING_LOCK
    _FINISHING_LOCK = threading.Lock()
    _FINISHING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_finishing_in_child)


@atexit.register
def _finish_closes_at_exit() -> None:
    # The I/O threads are daemon threads: without this, an interpreter that exits right after
    # close() would stop one before the peer answered its CONNECTION_CLOSE. Each is waited
    # for until the deadline its close() set (what close() itself waited at most before).
    with _FINISHING_LOCK:
        drives = list(_FINISHING)
    for drive in drives:
        finishing, thread = drive.finishing, drive.thread
        if finishing is not None and thread is not None:
            thread.join(max(0.0, finishing[1] - _monotonic()))


class Drive:
    """The driver's role of one ``DQUIC`` and the driving (module docstring).

    The ``DQUIC`` gives it the readiness map its ``receive_from`` serves (``ready``: a step
    that filled it wakes the API threads) and four hooks, each called with the lock held
    unless noted: ``on_events()`` turns the core's events into connection state (True if
    waiting threads should look again), ``on_unreachable(addr, errno)`` handles an ICMP
    report (True likewise), ``after_step()`` (or None) runs after each step without the lock, and
    ``on_failure(exc)`` is told that the I/O thread died of ``exc``.
    """

    def __init__(self, ready: Dict[Any, None], on_events: Callable[[], bool],
                 on_unreachable: Callable[[Tuple, int], bool],
                 after_step: Optional[Callable[[], None]],
                 on_failure: Callable[[BaseException], None], busy_poll: float = 0.0) -> None:
        lock = threading.Lock()
        #: the instance lock itself (``with drive.lock`` is ``with drive.cond`` without the
        #: Python-level ``Condition.__enter__``/``__exit__``: the hot paths take it so)
        self.lock = lock
        self.cond = threading.Condition(lock)  # API threads wait on this one
        self.io_cond = threading.Condition(lock)  # the I/O thread waits on this one
        self._ready = ready
        self._on_events = on_events
        self._on_unreachable = on_unreachable
        self._after_step = after_step
        self._on_failure = on_failure
        self.endpoint: Any = None
        self.sock: Optional[UDPSocket] = None
        self.waker: Optional[Waker] = None
        self._rlist: Optional[list] = None  # what a step selects on for reading (adopt)
        self._fd = self._wake_fd = -1
        self.thread: Optional[threading.Thread] = None
        # the role
        self.holder: Optional[int] = None  # ident of the thread driving the core, or None
        self.io_ident: Optional[int] = None
        self.epoch = 0  # counts API calls that took the driver's role
        self.want_handover = False  # an API thread waits for the I/O thread to hand over
        self.io_asleep = False  # the I/O thread sleeps until the driving call ends
        self.last_exit = 0.0  # when an API call last gave the role up
        # work carried across the hand-over
        self.flush_needed = False  # work was queued while another thread was driving
        self.deferred_flush = False  # acknowledgements wait for the application's next call
        self.corked = 0  # bytes of messages a burst of send_to calls holds back (deferred_flush)
        self.last_send = 0.0  # when the last send_to returned (DQUIC's ``nodelay``)
        self.last_step = 0.0  # when a driver last read the socket
        self.idle_spins = 0
        # how long a waiting API call polls the socket before it sleeps (_busypoll), when
        # something was sent since the last such wait (sock.datagrams_sent then)
        self.busy = BusyPoll(busy_poll, can_poll())
        self.sent_at_wait = 0
        # wake-ups
        self.waiters = 0  # API threads waiting on cond
        self.wake_pending = False
        # the API calls in progress
        self.active = 0  # API calls in progress
        self.receiving = 0  # receive_from calls in progress
        self.establishing = 0  # send_to calls waiting for their connection's handshake
        self.send_waiters = 0  # sends, flushes and closes waiting for acknowledgements
        # lifecycle
        self.closing = False
        self.stop = False
        self.io_wanted = False  # the I/O thread is to start at the next release (start)
        self.io_parked = False  # the I/O thread waits on io_cond (no socket call under way)
        self.detached = False  # the I/O thread is to end at once, touching nothing (detach_io)
        #: (connections, deadline): closes the I/O thread completes (finish_in_background)
        self.finishing: Optional[Tuple[list, float]] = None
        self.error: Optional[BaseException] = None  # what the I/O thread died of
        self.datagrams_in = 0
        self.datagrams_out = 0

    # ------------------------------------------------------------------------------------
    # wake-ups (lock held)
    def wait(self, timeout: Optional[float]) -> None:
        """Wait on the API condition, counted so notifications go only where somebody
        waits."""
        self.waiters += 1
        try:
            self.cond.wait(timeout)
        finally:
            self.waiters -= 1

    def notify(self) -> None:
        if self.waiters:
            self.cond.notify_all()

    def wake(self) -> None:
        """Make the thread blocked in ``select`` return (it then sends what the core queued)."""
        if self.wake_pending or self.waker is None:
            return
        self.wake_pending = True
        self.waker.wake()

    def alert(self) -> None:
        """Connection state changed outside a step (a connection given up locally): the
        driver sends what that queued, and the waiting API threads and the I/O thread look
        again."""
        self.flush_needed = True
        self.wake()
        self.notify()
        self.io_cond.notify()

    def begin_close(self) -> None:
        """The ``DQUIC`` is closing: API calls driving or waiting return (``EndpointClosed``)
        and the I/O thread takes the role at once from now on."""
        self.closing = True
        self.cond.notify_all()
        self.io_cond.notify()
        self.wake()

    def stop_io(self) -> None:
        """The I/O thread sends the last packets (CONNECTION_CLOSE) and ends."""
        self.stop = True
        self.cond.notify_all()
        self.io_cond.notify()
        self.wake()

    # ------------------------------------------------------------------------------------
    # the role in an API call (lock held)
    def drive_or_wait(self, deadline: Optional[float], message: str) -> None:
        """Make progress once while an API call waits: drive the core for one step (until
        something arrives, a timer is due or ``deadline``) if no other thread drives it, else
        wait to be notified. ``TimeoutError(message)`` once ``deadline`` has passed."""
        now = _monotonic()
        remaining = None if deadline is None else deadline - now
        me = threading.get_ident()
        holder = self.holder
        if holder is None or holder == me:
            if holder is None:
                self.holder = me
                self.epoch += 1
            if self.flush_needed or self.deferred_flush:
                self.flush()  # a deferral lasts one step at most
            timer = self.endpoint.get_timer()
            timeout = None if timer is None else max(0.0, timer - now)
            if remaining is not None:
                timeout = max(0.0, remaining) if timeout is None else min(timeout, max(0.0, remaining))
            self.cond.release()
            try:
                self.step(timeout, busy=True)
            finally:
                self.cond.acquire()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(message)
            return
        if remaining is not None and remaining <= 0:
            raise TimeoutError(message)
        if holder == self.io_ident:
            self.want_handover = True  # the I/O thread hands over after its current step
            self.wake()
        self.wait(remaining)

    def end_call(self, flush: bool = True) -> None:
        """End of an API call: send what it queued and give up the driver's role. With
        ``flush`` False (``receive_from``) acknowledgements and window updates due now wait
        for the application's next call (a reply carries them) or for the I/O thread, which
        takes over within ``IDLE_HANDOVER``; work other threads queued is still sent."""
        self.active -= 1
        if self.holder == threading.get_ident():
            try:
                if flush or self.flush_needed or self.sock.pending:
                    self.flush()
            finally:
                self.release()

    def let_go(self) -> None:
        """A call that drove through ``drive_or_wait`` outside ``end_call`` (``close``) gives
        the role back if it holds it."""
        if self.holder == threading.get_ident():
            self.release()

    def release(self) -> None:
        """An API thread stops driving: a waiting API thread may take over, and the I/O
        thread is told if work waits or it sleeps until this moment."""
        self.holder = None
        self.last_exit = _monotonic()
        if self.io_wanted:
            self.ensure_io()  # (started lazily: see start)
        if self.waiters:
            self.cond.notify_all()
        if self.io_asleep:
            # told once: until it has woken and looked, later releases need not wake it again
            self.io_asleep = False
            self.io_cond.notify()
        elif self.flush_needed or self.sock.pending:
            self.io_cond.notify()

    def kick(self) -> None:
        """Work was queued in the core: get it sent."""
        holder = self.holder
        if holder is None:
            self.holder = threading.get_ident()
            # a new holding of the role (the I/O thread, seeing the epoch move, does not take
            # back-to-back short calls for one long one and sleep until each ends, to be
            # woken by every release)
            self.epoch += 1
            try:
                if _monotonic() - self.last_step >= STEP_INTERVAL:
                    # a sender that never waits still reads acknowledgements now and then
                    self.cond.release()
                    try:
                        self.step(0.0, poll=True)
                    finally:
                        self.cond.acquire()
                    if self.deferred_flush or self.flush_needed:
                        self.flush()  # what this call queued goes now, not with a later reply
                else:
                    self.flush()
            finally:
                self.release()
        else:
            # another thread drives: it sends at its next step; this thread flushes before it
            # waits and when its call ends
            self.flush_needed = True
            if holder != threading.get_ident():
                self.wake()

    def hold_or_kick(self, start: float, size: int, gap: float, limit: int) -> bool:
        """A ``send_to`` that began at ``start`` queued ``size`` bytes of messages: hold them
        back to go with the next call's (``deferred_flush``) when it follows the previous
        ``send_to`` within ``gap`` and less than ``limit`` bytes would then wait, unless another
        thread drives (it may wait in select: it is woken as for any work); else get them sent
        (``kick``). True if held."""
        holder = self.holder
        if (start - self.last_send < gap and self.corked + size < limit
                and (holder is None or holder == threading.get_ident())):
            self.corked += size
            self.deferred_flush = True
            return True
        self.kick()
        return False

    def queue_flush(self) -> None:
        """Work was queued in the core while turning events into state (lock held, by the
        driver): it goes out with this step, or the driver's next flush."""
        self.flush_needed = True

    def defer_flush(self) -> None:
        """A ``receive_from`` read data (lock held): the flow-control window it opened goes
        with the application's next call (typically its reply), the next step, or the I/O
        thread within ``IDLE_HANDOVER``."""
        self.deferred_flush = True

    # ------------------------------------------------------------------------------------
    # driving (by the role's holder)
    def flush(self) -> None:
        """Send what the core has for the network now (lock held by the driver; released
        around the socket calls)."""
        ep = self.endpoint
        sock = self.sock
        self.deferred_flush = False
        self.corked = 0
        for _ in range(16):
            self.flush_needed = False
            if not sock.pending:
                # (the polled connections' bookkeeping waits until the trains are out)
                out = ep.trains_to_send(_monotonic(), settle=False)
                if out:
                    self.cond.release()
                    try:
                        sock.send_now(out)  # what the kernel refuses stays queued (pending)
                        self.datagrams_out = sock.datagrams_sent
                    finally:
                        self.cond.acquire()
                ep.settle()
                if (ep.events or ep.readable) and self._on_events():
                    self.notify()
                if not out:
                    return
            else:
                self.cond.release()
                try:
                    self.send_pending()
                finally:
                    self.cond.acquire()
            if sock.pending or not self.flush_needed:
                return  # the kernel is full (a driver waits for it to drain) or all is out

    def _busy_wait(self, rlist: list, wlist: list, timeout: Optional[float]) -> list:
        """``select`` for a waiting API call: poll for the busy-poll budget (in C, the GIL
        released, yielding the CPU between looks: ``_pollwait``), then sleep for the rest of
        ``timeout``; the budget learns from how the wait ended (``_busypoll``)."""
        bp = self.busy
        budget = bp.budget
        start = _monotonic()
        if budget > 0.0:
            if timeout is not None and timeout < budget:
                budget = timeout
            got = poll_ready(self._fd, self._wake_fd, self._fd if wlist else -1, budget)
            if got > 0:
                bp.caught()
                if got & READY_A:
                    return [self._fd, self._wake_fd] if got & READY_B else [self._fd]
                return [self._wake_fd] if got & READY_B else []  # ([]: writable only)
            if got == CONTENDED:
                bp.contended()  # the CPU is wanted: sleep in select, the wait not counted
                return select.select(rlist, wlist, [], timeout)[0]
            if timeout is not None:
                timeout = max(0.0, timeout - budget)
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        bp.slept(_monotonic() - start if readable or writable else None)
        return readable

    def step(self, timeout: Optional[float], poll: bool = False, busy: bool = False) -> None:
        """One driving step (lock NOT held; the caller holds the driver's role): wait up to
        ``timeout`` for the socket or the wake-up descriptor, read, process, send. A ``poll``
        (``kick``'s look at the socket between an application's calls) never waits: the
        pause that keeps a due timer which changes nothing from spinning is for steps that
        wait for that timer, not for calls that find the socket quiet. A ``busy`` step (an
        API call waiting) polls the socket for the busy-poll budget before it sleeps, if
        datagrams were sent since the last step that did."""
        sock = self.sock
        rlist = self._rlist
        if rlist is None:
            rlist = self.adopt()
        self.last_step = _monotonic()
        if not poll and timeout is not None and timeout <= 0.0 and self.idle_spins >= 3:
            timeout = 0.001  # a due timer that changes nothing: do not spin
        wlist = [self._fd] if sock.pending else []
        if (busy and self.busy.limit and (timeout is None or timeout > 0.0)
                and sock.datagrams_sent != self.sent_at_wait):
            # an API call waits, and this side sent since the last wait: an answer may come
            self.sent_at_wait = sock.datagrams_sent
            readable = self._busy_wait(rlist, wlist, timeout)
        else:
            readable = select.select(rlist, wlist, [], timeout)[0]
        if readable:
            woke = self._wake_fd in readable
            if woke:
                self.waker.drain()
            batch = sock.recv_batch(RECV_BATCH) if self._fd in readable else []
        else:
            woke = False
            batch = []
        now = _monotonic()
        ep = self.endpoint
        out = None
        with self.lock:
            if woke:
                self.wake_pending = False
            notify = False
            for data, addr, seg in batch:
                if seg:
                    ep.receive_segments(data, seg, addr, now)
                else:
                    ep.receive_datagram(data, addr, now)
            if batch:
                self.datagrams_in = sock.datagrams_received
                # new data to hand out, or acknowledgements a blocked send_to waits for
                notify = self.send_waiters > 0
            if sock.unreachable_reports:
                for addr, err in sock.unreachable():
                    notify |= self._on_unreachable(addr, err)
            ep.handle_timer(now)  # (returns at once when no deadline has passed)
            if (ep.events or ep.readable) and self._on_events():
                notify = True
            # A few datagrams that completed messages for a receive_from driving this step:
            # its caller is about to get them and typically answers at once, so the
            # acknowledgement waits to go out with that answer (see end_call).
            # Likewise when a send_to waits for its handshake: the step that completes it
            # leaves its acknowledgement and first 1-RTT frames to go with the message the
            # caller queues next, in one datagram (a step that does not complete it costs
            # nothing: the next drive_or_wait flushes first thing).
            defer = (not self.flush_needed and len(batch) <= 2
                     and ((self.receiving and self._ready) or (self.establishing and batch))
                     and self.holder != self.io_ident)
            self.flush_needed = False
            if defer:
                self.deferred_flush = True
            elif not sock.pending:
                self.deferred_flush = False
                self.corked = 0
                # (the polled connections' bookkeeping waits until the trains are out)
                out = ep.trains_to_send(now, settle=False)
            if notify or (batch and self._ready):
                self.notify()
        if out:
            sent = sock.send_now(out)
            self.datagrams_out = sock.datagrams_sent
        elif sock.pending:
            sent = self.send_pending()
        else:
            sent = 0
        if out is not None:
            with self.lock:
                ep.settle()
                if (ep.events or ep.readable) and self._on_events():
                    self.notify()
        if batch or sent or readable:
            self.idle_spins = 0
        elif not poll:
            self.idle_spins += 1
        if self._after_step is not None:
            self._after_step()

    @property
    def pending(self) -> bool:
        """Trains wait for the kernel (the socket was full)."""
        sock = self.sock
        return sock is not None and sock.pending

    def adopt(self) -> list:
        """Note the descriptors of ``sock`` and ``waker`` (set by ``start``) that each step
        selects on; returns that list."""
        self._fd = self.sock.fileno()
        self._wake_fd = self.waker.fileno()
        rlist = self._rlist = [self._fd, self._wake_fd]
        return rlist

    def send_pending(self) -> int:
        """Hand the queued trains to the kernel (driver only, lock not needed); returns how
        many datagrams went out."""
        sent = self.sock.flush()
        self.datagrams_out = self.sock.datagrams_sent
        return sent

    # ------------------------------------------------------------------------------------
    # the I/O thread
    def start(self, sock: UDPSocket, endpoint: Any, lazy: bool = False) -> None:
        """Drive ``endpoint`` over ``sock`` and start the I/O thread (lock held); with
        ``lazy``, once the calling API thread first gives up the role (``release``): the
        call that made the socket drives until then, and starting a thread is then no longer
        between its first datagram and the application's call (a client that sends first
        waits for the peer's answer while the thread starts)."""
        self.sock = sock
        self.endpoint = endpoint
        self.waker = Waker()
        self.adopt()
        if lazy:
            self.io_wanted = True
        else:
            self.ensure_io()

    def ensure_io(self) -> None:
        """Start the I/O thread if it was not (lock held)."""
        self.io_wanted = False
        if self.thread is None and self.sock is not None:
            self.thread = threading.Thread(target=self._run, name="dquic-io", daemon=True)
            self.thread.start()

    def detach_io(self) -> bool:
        """``close()``, its connections closed: end the I/O thread without waiting for it when
        it is parked between steps (not in a socket call): the calling thread sends what is
        left, then the I/O thread is told to end without touching the socket or the wake-up
        descriptor again, so both may be closed at once. False when it is not parked (or
        something could not be sent): then ``stop_io`` and a join. Lock held, role free."""
        if not self.io_parked or self.holder is not None or self.error is not None:
            return False
        self.holder = threading.get_ident()
        try:
            self.flush()
        finally:
            self.holder = None
        if self.pending or not self.io_parked:
            return False
        self.detached = True
        self.io_cond.notify()
        return True

    def finish_in_background(self, conns: list, deadline: float) -> bool:
        """``close()`` of a socket no application bound, every CONNECTION_CLOSE of ``conns``
        sent: the I/O thread waits for the peers' answers (``close_settled``; a lost close
        goes out again when the peer's next packet arrives, PROTOCOL.md §19) until
        ``deadline``, then closes the socket and the wake-up descriptor itself, so that
        ``close()`` returns without waiting a round trip. False (the caller waits itself)
        when the thread does not run or another API thread drives. Lock held, the caller not
        driving."""
        thread = self.thread
        if (thread is None or not thread.is_alive() or self.error is not None
                or self.holder not in (None, self.io_ident)):
            return False
        self.finishing = (conns, deadline)
        with _FINISHING_LOCK:
            _FINISHING.add(self)
        self.io_cond.notify()
        self.wake()  # (a step of the I/O thread under way takes the deadline into account)
        return True

    def _run(self) -> None:
        self.io_ident = threading.get_ident()
        try:
            self.io_loop()
        except BaseException as exc:  # pragma: no cover - reported to the API threads
            with self.cond:
                self.error = exc
                if self.holder == self.io_ident:
                    self.holder = None
                self._on_failure(exc)
                if self.finishing is not None:  # close() left the socket to this thread
                    self._end_finishing()
                self.cond.notify_all()
            raise

    def _end_finishing(self) -> None:
        # the I/O thread ends the close() left to it: it closes the socket (lock held)
        self.finishing = None
        with _FINISHING_LOCK:
            _FINISHING.discard(self)
        self.close()

    def _park(self, timeout: float) -> None:
        # the I/O thread waits between steps, in no socket call (lock held; see detach_io)
        self.io_parked = True
        try:
            self.io_cond.wait(timeout)
        finally:
            self.io_parked = False

    def io_loop(self) -> None:
        """The I/O thread: drive the core whenever no API call does."""
        me = threading.get_ident()
        cond = self.cond
        ep = self.endpoint
        seen_epoch = -1
        while True:
            with cond:
                finishing = self.finishing
                if finishing is not None and (_monotonic() >= finishing[1]
                                              or all(c.close_settled for c in finishing[0])):
                    # the closes close() left to this thread are answered (or out of time)
                    if self.holder == me:
                        self.holder = None
                    self._end_finishing()
                    return
                # wait for the role: free, and no API call has driven for IDLE_HANDOVER
                while True:
                    holder = self.holder
                    if holder == me:
                        break
                    if holder is None:
                        if self.stop or self.closing or self.pending or self.flush_needed:
                            break
                        # (an API thread waiting for the role was notified when it came free;
                        # should it not have taken it, the I/O thread drives all the same)
                        idle = _monotonic() - self.last_exit
                        if idle >= IDLE_HANDOVER:
                            break
                        self._park(max(IDLE_HANDOVER - idle, 0.0002))
                    elif self.epoch == seen_epoch:
                        # the same call has been driving for a while (a receive_from waiting
                        # for data): sleep until it ends instead of looking every 2 ms
                        self.io_asleep = True
                        self._park(1.0)
                        self.io_asleep = False
                    else:
                        seen_epoch = self.epoch
                        self._park(IDLE_HANDOVER)
                    if self.detached:
                        return  # close() took over (detach_io)
                self.holder = me
                self.want_handover = False
                if self.flush_needed or self.deferred_flush:
                    self.flush()
                stop = self.stop
                timer = ep.get_timer()
                if stop:
                    timeout = 0.0
                elif timer is None:
                    timeout = None
                else:
                    timeout = max(0.0, timer - _monotonic())
                if finishing is not None:
                    left = max(0.0, finishing[1] - _monotonic())
                    timeout = left if timeout is None else min(timeout, left)
            try:
                self.step(timeout)
            finally:
                with cond:
                    if stop or self.want_handover:
                        self.holder = None
                        self.last_exit = _monotonic()  # let the asking thread take the role
                        self.notify()
            if stop:
                with cond:
                    self.holder = me
                try:
                    # bounded effort to flush the last packets (CONNECTION_CLOSE)
                    for _ in range(100):
                        if not self.pending:
                            break
                        select.select([], [self.sock.fileno()], [], 0.01)
                        self.send_pending()
                finally:
                    with cond:
                        self.holder = None
                return

    def close(self) -> None:
        """Release the socket and the wake-up descriptor (lock held): once the I/O thread
        ended, or by that thread as it ends (``finish_in_background``)."""
        if self.sock is not None:
            self.sock.close()
        if self.waker is not None:
            self.waker.close()
            self.waker = None
            self._rlist = None

