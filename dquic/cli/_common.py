"""What the commands of ``dquic.cli`` share: exit codes, ``CommandFailed``, the formatting of
sizes, rates and errors, and the progress display."""
from __future__ import annotations

import math
import shutil
import sys
import time
from typing import Any, Callable, Optional, TextIO, Tuple

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

KiB = 1024
MiB = 1024 * 1024


class CommandFailed(Exception):
    """A command failed; ``exit_code`` is what the process exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------------------------
# formatting helpers
def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def _size(n: float) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{int(n)} B"


def _mbit(nbytes: float, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _connection_exit(exc: BaseException) -> int:
    """Exit code for an exception raised while connecting or transferring."""
    from ..errors import DQUICError

    if isinstance(exc, (DQUICError, ConnectionError, TimeoutError, OSError)):
        return EXIT_CONNECTION
    return EXIT_FAILURE


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"



def _duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on (rounded up to a whole second)."""
    total = int(math.ceil(max(0.0, seconds) - 1e-9))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Progress:
    """Progress of one transfer on ``stream`` (default stderr): bytes done of the total,
    percentage, rate and time left.

    On a terminal: tqdm's bar when tqdm is installed (``pip install "dquic[progress]"``), else
    a one-line bar redrawn in place. Elsewhere (a file, a pipe, a CI log), with ``lines``: a
    plain line every ``interval`` seconds, and a last one at ``close()`` if any was written;
    never a carriage return. Without ``lines``, nothing there. ``start`` is where a resumed
    transfer begins (not counted in the rate)."""

    BAR_EVERY = 0.2  # seconds between redraws of the plain bar

    def __init__(self, total: int, label: str, *, start: int = 0, enabled: bool = True,
                 lines: bool = True, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 5.0) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.interval = interval
        self.start = self.done = start
        self.t0 = self._last = clock()
        self._drawn = 0  # length of the bar line on screen
        self._lines = 0  # lines written (lines mode)
        self._line_done = -1  # bytes done in the last line written
        self._bar: Any = None
        self.mode: Optional[str] = None  # "tqdm", "bar", "lines" or None (silent)
        if not enabled:
            return
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            try:
                from tqdm import tqdm  # optional: the "progress" extra
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self.total, initial=start, unit="B", unit_scale=True,
                                 unit_divisor=1024, desc=label, leave=False, file=self.stream,
                                 dynamic_ncols=True)
                self.mode = "tqdm"
            else:
                self.mode = "bar"
                self._last = -math.inf  # draw at the first update
        elif lines:
            self.mode = "lines"

    def status(self, now: float, final: bool = False, label: Optional[str] = None) -> str:
        """``label: 12.0 MiB of 50.0 MiB (24%), 9.8 MiB/s, ETA 0:04`` (at the end: the time
        taken instead of the ETA)."""
        done, total = self.done, self.total
        pct = 100 if total == 0 else int(100 * min(done, total) / total)
        elapsed = now - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else 0.0
        text = f"{self.label if label is None else label}: {_size(done)} of {_size(total)} ({pct}%)"
        if rate > 0:
            text += f", {_size(rate)}/s"
        if final or done >= total:
            return text + f", in {_duration(elapsed)}"
        return text + (f", ETA {_duration((total - done) / rate)}" if rate > 0 else ", ETA --:--")

    def update(self, done: int) -> None:
        if self.mode is None:
            return
        delta = done - self.done
        self.done = done
        if self.mode == "tqdm":
            if delta > 0:
                self._bar.update(delta)
            return
        now = self.clock()
        if self.mode == "bar":
            if now - self._last < self.BAR_EVERY and done < self.total:
                return
            self._last = now
            width = 20
            filled = int(width * min(done, self.total) / self.total) if self.total else width
            text = f"[{'#' * filled}{'.' * (width - filled)}] " + self.status(now)
            columns = shutil.get_terminal_size((80, 24)).columns - 1
            if len(text) > columns:  # a long name: shorten it, keep the figures
                keep = max(1, len(self.label) - (len(text) - columns) - 3)
                text = (f"[{'#' * filled}{'.' * (width - filled)}] "
                        + self.status(now, label=self.label[:keep] + "..."))[:columns]
            self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
            self._drawn = len(text)
            self.stream.flush()
        elif now - self._last >= self.interval:
            self._last = now
            self._write_line(now)

    def _write_line(self, now: float, final: bool = False) -> None:
        self.stream.write(self.status(now, final) + "\n")
        self.stream.flush()
        self._lines += 1
        self._line_done = self.done

    def close(self) -> None:
        mode, self.mode = self.mode, None
        if mode == "tqdm":
            self._bar.close()
        elif mode == "bar" and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
        elif mode == "lines" and self._lines and self._line_done != self.done:
            self._write_line(self.clock(), final=True)


def _bound_address(endpoint: Any) -> Tuple:
    """The local address of a bound ``dquic.DQUIC`` endpoint."""
    address = endpoint.local_address
    if address is None:
        raise RuntimeError("the endpoint is not bound")
    return address


def _b64(key: bytes) -> str:
    import base64

    return base64.b64encode(key).decode("ascii")


def _strerror(exc: OSError) -> str:
    """An ``OSError``'s text without its class and errno: 'permission denied'."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]

