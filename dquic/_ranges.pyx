# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled set of non-negative integers stored as sorted half-open ranges.

Used for ACK bookkeeping (received packet numbers, RFC 9000 §13.2), for the acknowledged and
to-be-retransmitted byte ranges of a send stream and for the received byte ranges of a receive
stream (RFC 9000 §2.2).  Ranges are ``[start, stop)``, ascending, never overlapping and never
adjacent: adding ``[5, 7)`` to ``{[1, 5)}`` yields ``{[1, 7)}``.

The state is a growable C array of ``(start, stop)`` pairs.  Values are unsigned 64-bit.
Additions at or above the highest range (the common case: packet numbers and stream offsets
mostly grow) are O(1) amortised; elsewhere a binary search finds the place and the tail is
moved with ``memmove`` (sets hold a few to a few hundred ranges).
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy, memmove

cdef uint64_t _U64_MAX = <uint64_t>0xFFFFFFFFFFFFFFFF


cdef class RangeSet:
    """A set of integers kept as sorted, merged half-open ranges.

    ``RangeSet(ranges=(), max_ranges=0)``: ``ranges`` is an iterable of ``(start, stop)`` pairs
    to add; ``max_ranges`` bounds the number of ranges kept (0 = unlimited).  When an operation
    would leave more than ``max_ranges`` ranges, the LOWEST ranges are dropped: for ACK
    bookkeeping the oldest information is the least useful (RFC 9000 §13.2.3).
    """

    def __cinit__(self, *args, **kwargs):
        self._r = &self._one[0]
        self._n = 0
        self._cap = 1
        self._max = 0

    def __init__(self, ranges=(), Py_ssize_t max_ranges=0):
        if max_ranges < 0:
            raise ValueError("max_ranges must be >= 0")
        self._max = max_ranges
        for item in ranges:
            start, stop = item
            self.add(start, stop)

    def __dealloc__(self):
        if self._r != &self._one[0]:
            PyMem_Free(self._r)
        self._r = NULL

    def __sizeof__(self):
        # the object plus its C array of pairs, if any (what sys.getsizeof reports)
        if self._r == &self._one[0]:
            return type(self).__basicsize__
        return type(self).__basicsize__ + self._cap * 2 * sizeof(uint64_t)

    # ------------------------------------------------------------------ internals

    cdef int _reserve(self, Py_ssize_t pairs) except -1:
        """Make room for at least ``pairs`` pairs (geometric growth)."""
        cdef Py_ssize_t cap
        cdef uint64_t* mem
        if pairs <= self._cap:
            return 0
        cap = self._cap * 2 if self._cap > 1 else 4
        if cap < pairs:
            cap = pairs
        if self._r == &self._one[0]:
            mem = <uint64_t*>PyMem_Malloc(<size_t>cap * 2 * sizeof(uint64_t))
            if mem is NULL:
                raise MemoryError()
            memcpy(mem, self._one, <size_t>self._n * 2 * sizeof(uint64_t))
        else:
            mem = <uint64_t*>PyMem_Realloc(self._r, <size_t>cap * 2 * sizeof(uint64_t))
            if mem is NULL:
                raise MemoryError()
        self._r = mem
        self._cap = cap
        return 0

    cdef int _replace(self, Py_ssize_t i, Py_ssize_t j, Py_ssize_t k) except -1:
        """Replace pairs ``[i, j)`` by ``k`` uninitialised pairs starting at ``i``."""
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t new_n = n - (j - i) + k
        if new_n > self._cap:
            self._reserve(new_n)
        if j != i + k and j < n:
            memmove(&self._r[2 * (i + k)], &self._r[2 * j], <size_t>(n - j) * 2 * sizeof(uint64_t))
        self._n = new_n
        return 0

    cdef void _enforce_max(self) noexcept:
        cdef Py_ssize_t drop
        if self._max and self._n > self._max:
            drop = self._n - self._max
            memmove(&self._r[0], &self._r[2 * drop], <size_t>self._max * 2 * sizeof(uint64_t))
            self._n = self._max

    cdef Py_ssize_t _first_stop_ge(self, uint64_t x) noexcept:
        """Index of the first range whose stop is >= x (``_n`` if none)."""
        cdef Py_ssize_t lo = 0, hi = self._n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._r[2 * mid + 1] < x:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # ------------------------------------------------------------------ C API

    cdef int add_range(self, uint64_t start, uint64_t stop) except -1:
        """Add ``[start, stop)``; a no-op when ``stop <= start``."""
        cdef Py_ssize_t n = self._n, i, j
        cdef uint64_t* r
        if stop <= start:
            return 0
        if n:
            r = self._r
            # Fast paths at the top: new highest range, or extension of the last one.
            if start > r[2 * n - 1]:
                if n >= self._cap:
                    self._reserve(n + 1)
                    r = self._r
                r[2 * n] = start
                r[2 * n + 1] = stop
                self._n = n + 1
                self._enforce_max()
                return 0
            if start >= r[2 * n - 2]:
                if stop > r[2 * n - 1]:
                    r[2 * n - 1] = stop
                return 0
        else:
            self._reserve(1)
            self._r[0] = start
            self._r[1] = stop
            self._n = 1
            self._enforce_max()
            return 0
        # General case: ranges i..j-1 touch or overlap [start, stop) and merge with it.
        i = self._first_stop_ge(start)
        j = i
        r = self._r
        while j < n and r[2 * j] <= stop:
            j += 1
        if i == j:
            self._replace(i, i, 1)
            self._r[2 * i] = start
            self._r[2 * i + 1] = stop
            self._enforce_max()
            return 0
        if r[2 * i] < start:
            start = r[2 * i]
        if r[2 * j - 1] > stop:
            stop = r[2 * j - 1]
        self._replace(i, j, 1)
        self._r[2 * i] = start
        self._r[2 * i + 1] = stop
        return 0

    cdef int subtract_range(self, uint64_t start, uint64_t stop) except -1:
        """Remove ``[start, stop)``; a no-op when ``stop <= start``."""
        cdef Py_ssize_t n = self._n, i, j, k
        cdef uint64_t left_start, right_stop
        cdef bint keep_left, keep_right
        cdef uint64_t* r = self._r
        if stop <= start or n == 0:
            return 0
        # first range whose stop > start
        i = self._first_stop_ge(start)
        if i < n and r[2 * i + 1] == start:
            i += 1
        j = i
        while j < n and r[2 * j] < stop:
            j += 1
        if i == j:
            return 0
        left_start = r[2 * i]
        right_stop = r[2 * j - 1]
        keep_left = left_start < start
        keep_right = right_stop > stop
        k = (<Py_ssize_t>keep_left) + (<Py_ssize_t>keep_right)
        self._replace(i, j, k)
        r = self._r
        if keep_left:
            r[2 * i] = left_start
            r[2 * i + 1] = start
            i += 1
        if keep_right:
            r[2 * i] = stop
            r[2 * i + 1] = right_stop
        self._enforce_max()
        return 0

    cdef bint contains(self, uint64_t x) noexcept:
        cdef Py_ssize_t n = self._n, i
        if n == 0:
            return False
        if x >= self._r[2 * n - 2]:
            return x < self._r[2 * n - 1]
        # first range with stop > x
        if x == _U64_MAX:
            return False
        i = self._first_stop_ge(x + 1)
        return i < n and self._r[2 * i] <= x

    cdef bint covers_range(self, uint64_t start, uint64_t stop) noexcept:
        cdef Py_ssize_t i
        if stop <= start:
            return True
        if start == _U64_MAX:
            return False
        i = self._first_stop_ge(start + 1)
        return i < self._n and self._r[2 * i] <= start and self._r[2 * i + 1] >= stop

    cdef uint64_t overlap(self, uint64_t start, uint64_t stop) noexcept:
        """Number of integers of ``[start, stop)`` that are in the set."""
        cdef Py_ssize_t i, n = self._n
        cdef uint64_t total = 0, a, b
        if stop <= start:
            return 0
        i = self._first_stop_ge(start)
        while i < n and self._r[2 * i] < stop:
            a = self._r[2 * i]
            b = self._r[2 * i + 1]
            if a < start:
                a = start
            if b > stop:
                b = stop
            if b > a:
                total += b - a
            i += 1
        return total

    cdef uint64_t total_c(self) noexcept:
        cdef Py_ssize_t i
        cdef uint64_t total = 0
        for i in range(self._n):
            total += self._r[2 * i + 1] - self._r[2 * i]
        return total

    cdef void shrink_c(self) noexcept:
        cdef uint64_t* mem
        if self._r == &self._one[0] or self._cap == self._n:
            return
        if self._n <= 1:
            # back to the room inside the object
            if self._n:
                self._one[0] = self._r[0]
                self._one[1] = self._r[1]
            PyMem_Free(self._r)
            self._r = &self._one[0]
            self._cap = 1
            return
        mem = <uint64_t*>PyMem_Realloc(self._r, <size_t>self._n * 2 * sizeof(uint64_t))
        if mem is not NULL:  # else keep the larger block
            self._r = mem
            self._cap = self._n

    cdef void clear_c(self) noexcept:
        self._n = 0

    cdef int shift_c(self, uint64_t* start, uint64_t* stop) noexcept:
        """Pop the lowest range into ``start``/``stop``; returns 0 when empty, 1 otherwise."""
        if self._n == 0:
            return 0
        start[0] = self._r[0]
        stop[0] = self._r[1]
        self._n -= 1
        if self._n:
            memmove(&self._r[0], &self._r[2], <size_t>self._n * 2 * sizeof(uint64_t))
        return 1

    # ------------------------------------------------------------------ Python API

    def add(self, uint64_t start, stop=None):
        """Add ``[start, stop)`` (``stop=None`` adds the single integer ``start``).

        Overlapping and adjacent ranges merge.  Raises ``ValueError`` if ``stop < start``.
        """
        cdef uint64_t c_stop
        if stop is None:
            if start == _U64_MAX:
                raise OverflowError("value out of range")
            c_stop = start + 1
        else:
            c_stop = stop
            if c_stop < start:
                raise ValueError("stop < start")
        self.add_range(start, c_stop)

    def subtract(self, uint64_t start, uint64_t stop):
        """Remove every integer of ``[start, stop)``; raises ``ValueError`` if ``stop < start``."""
        if stop < start:
            raise ValueError("stop < start")
        self.subtract_range(start, stop)

    def __contains__(self, x):
        if not isinstance(x, int) or x < 0 or x > 0xFFFFFFFFFFFFFFFF:
            return False
        return self.contains(<uint64_t>x)

    def __len__(self):
        """Number of ranges (not of integers: see ``total()``)."""
        return self._n

    def __bool__(self):
        return self._n != 0

    def __iter__(self):
        cdef Py_ssize_t i = 0
        # Re-read _n on every step: a loop body that mutates the set never reads stale memory.
        while i < self._n:
            yield (self._r[2 * i], self._r[2 * i + 1])
            i += 1

    def __getitem__(self, Py_ssize_t i):
        if i < 0:
            i += self._n
        if i < 0 or i >= self._n:
            raise IndexError("RangeSet index out of range")
        return (self._r[2 * i], self._r[2 * i + 1])

    def __eq__(self, other):
        cdef RangeSet o
        if not isinstance(other, RangeSet):
            return NotImplemented
        o = <RangeSet>other
        if o._n != self._n:
            return False
        if self._n == 0:
            return True
        return memcmp(self._r, o._r, <size_t>self._n * 2 * sizeof(uint64_t)) == 0

    def __ne__(self, other):
        result = self.__eq__(other)
        if result is NotImplemented:
            return result
        return not result

    __hash__ = None

    def __repr__(self):
        return "RangeSet([%s])" % ", ".join(
            "(%d, %d)" % (self._r[2 * i], self._r[2 * i + 1]) for i in range(self._n))

    def bounds(self):
        """``(lowest start, highest stop)``; raises ``IndexError`` when empty."""
        if self._n == 0:
            raise IndexError("bounds() of an empty RangeSet")
        return (self._r[0], self._r[2 * self._n - 1])

    def shift(self):
        """Remove and return the lowest range ``(start, stop)``; ``IndexError`` when empty."""
        cdef uint64_t a, b
        if not self.shift_c(&a, &b):
            raise IndexError("shift() from an empty RangeSet")
        return (a, b)

    @property
    def is_empty(self):
        """True when the set holds no integer."""
        return self._n == 0

    @property
    def max_ranges(self):
        """The bound on the number of ranges (0 = unlimited)."""
        return self._max

    def clear(self):
        """Remove everything (keeps the allocated memory for reuse)."""
        self._n = 0

    def shrink(self):
        """Release the memory the ranges do not use (all of it when the set is empty)."""
        self.shrink_c()

    def copy(self):
        """An independent copy with the same ranges and ``max_ranges``."""
        cdef RangeSet c = RangeSet.__new__(RangeSet)
        c._max = self._max
        if self._n:
            c._reserve(self._n)
            memcpy(c._r, self._r, <size_t>self._n * 2 * sizeof(uint64_t))
            c._n = self._n
        return c

    def total(self):
        """Number of integers covered by all ranges."""
        return self.total_c()

    def count_in(self, uint64_t start, uint64_t stop):
        """Number of integers of ``[start, stop)`` that are in the set."""
        return self.overlap(start, stop)

    def covers(self, uint64_t start, uint64_t stop):
        """True when every integer of ``[start, stop)`` is in the set (True for an empty range)."""
        return self.covers_range(start, stop)

    def missing(self, uint64_t start, uint64_t stop):
        """The sub-ranges of ``[start, stop)`` NOT in the set, ascending, as ``(start, stop)``."""
        cdef list out = []
        cdef Py_ssize_t i, n = self._n
        cdef uint64_t pos = start, a, b
        if stop <= start:
            return out
        i = self._first_stop_ge(start)
        while i < n and self._r[2 * i] < stop:
            a = self._r[2 * i]
            b = self._r[2 * i + 1]
            if a > pos:
                out.append((pos, a))
            if b > pos:
                pos = b
            i += 1
        if pos < stop:
            out.append((pos, stop))
        return out

    def __reduce__(self):
        return (RangeSet, (list(self), self._max))
