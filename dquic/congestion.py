"""Congestion control: the built-in controllers and how to plug in your own.

dquic ships two controllers, both implemented in Cython (``dquic._congestion``):

* ``"cubic"`` — :class:`Cubic` (RFC 9438) with HyStart++ (RFC 9406) in the initial slow start.
  This is the default.
* ``"newreno"`` — :class:`NewReno` (RFC 9002 §7).
* ``"bbr"`` — :class:`Bbr`, model-based (bottleneck bandwidth and min RTT, after BBR v1) with
  a loss-rate limit on startup and bandwidth probing. It needs its pacing rate applied:
  ``pacer.update(cc.congestion_window, srtt, cc.in_slow_start(), cc.pacing_rate())``.

A connection creates its controller with :func:`create_controller` from the configured name.
To add an algorithm, subclass :class:`CongestionController` (in Python or Cython), override the
hooks you need and register it::

    from dquic.congestion import CongestionController, register

    class FixedWindow(CongestionController):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.congestion_window = 64 * self.max_datagram_size

        def on_congestion_event(self, time_sent, now):
            pass                     # never back off (for experiments only!)

    register("fixed", FixedWindow)

The hooks, called by loss recovery with times in float seconds and sizes in bytes:

``on_packet_sent(sent_bytes, now)``
    an in-flight packet left; the base adds it to ``bytes_in_flight``.
``on_packets_acked(acked_bytes, largest_time_sent, now, rtt_sample, smoothed_rtt, min_rtt)``
    once per ACK frame that newly acknowledged in-flight packets; ``rtt_sample`` is 0.0 when
    the frame produced no RTT sample. The base removes the bytes from ``bytes_in_flight`` and
    ends the recovery period; call it from overrides.
``on_packets_lost(lost_bytes, now)`` then ``on_congestion_event(time_sent, now)``
    for each batch of losses; ``time_sent`` is the newest send time among the lost packets.
    Reduce at most once per recovery period (``self.recovery_start_time``).
``on_persistent_congestion(now)``, ``on_packet_discarded(sent_bytes)``
    see RFC 9002 §7.6 and §6.4.
``on_spurious_congestion(now)``
    every loss since the latest reduction (``congestion_events`` grew) was acknowledged
    after all: undo that reduction. The base class restores the saved window, slow-start
    threshold and recovery period; override ``_save_undo``/``_restore_undo`` in Cython, or
    this hook in Python, to restore more.
``on_rate_sample(delivery_rate, rtt, delivered, prior_delivered, is_app_limited, now)``
    a delivery-rate sample (bytes/s) once per ACK frame, after ``on_packets_acked``.
``pacing_rate()``
    bytes/s to pace at, or 0.0 (the default) to let :class:`Pacer` use ``cwnd / srtt``.

The connection consults ``can_send(size)`` and ``available()``, and paces with :class:`Pacer`.
Set ``is_app_limited`` while the application, not the window, limits sending: the built-in
controllers then do not grow the window (RFC 9002 §7.8).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from ._congestion import Bbr, CongestionController, Cubic, NewReno, Pacer

__all__ = [
    "CongestionController",
    "NewReno",
    "Cubic",
    "Bbr",
    "Pacer",
    "DEFAULT",
    "register",
    "create_controller",
    "available_controllers",
]

DEFAULT = "cubic"

_REGISTRY: Dict[str, Callable[..., CongestionController]] = {
    "cubic": Cubic,
    "newreno": NewReno,
    "bbr": Bbr,
}


def register(name: str, cls: Callable[..., CongestionController]) -> None:
    """Make ``cls`` available to :func:`create_controller` under ``name`` (case-insensitive).

    ``cls`` must produce a :class:`CongestionController` instance when called with the keyword
    arguments given to :func:`create_controller`. Registering an existing name replaces it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("controller name must be a non-empty string")
    if not callable(cls):
        raise TypeError("cls must be callable")
    _REGISTRY[name.lower()] = cls


def available_controllers() -> list:
    """Names accepted by :func:`create_controller`, sorted."""
    return sorted(_REGISTRY)


def create_controller(name: str = DEFAULT, **kw: Any) -> CongestionController:
    """Instantiate the controller registered as ``name`` with keyword arguments ``kw``.

    Common keywords: ``max_datagram_size`` (1200), ``initial_window``, ``minimum_window``,
    ``maximum_window``. Raises ``ValueError`` for an unknown name.
    """
    try:
        factory = _REGISTRY[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown congestion controller {name!r}; "
                         f"known: {', '.join(available_controllers())}") from None
    cc = factory(**kw)
    if not isinstance(cc, CongestionController):
        raise TypeError(f"controller {name!r} did not produce a CongestionController")
    return cc
