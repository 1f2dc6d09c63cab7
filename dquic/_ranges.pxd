# cython: language_level=3
"""C-level interface of :class:`dquic._ranges.RangeSet`.

Compiled modules ``cimport`` this to use a range set without Python objects on the hot path:
``add_range``/``subtract_range``/``contains`` take C integers, and ``count``/``start_at``/
``stop_at`` read the sorted pairs directly.
"""
cimport cython
from libc.stdint cimport uint64_t


@cython.final
cdef class RangeSet:
    # Sorted, non-overlapping, non-adjacent half-open ranges stored as pairs:
    # _r[2*i] = start, _r[2*i+1] = stop, for 0 <= i < _n.  Capacity is _cap pairs.
    cdef uint64_t* _r         # _one while one pair is room enough, else a PyMem array
    cdef Py_ssize_t _n
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _max      # 0 = unlimited; otherwise lowest ranges are dropped beyond it
    cdef uint64_t _one[2]     # room for one pair inside the object (most sets hold one range)

    cdef int _reserve(self, Py_ssize_t pairs) except -1
    cdef int _replace(self, Py_ssize_t i, Py_ssize_t j, Py_ssize_t k) except -1
    cdef void _enforce_max(self) noexcept
    cdef Py_ssize_t _first_stop_ge(self, uint64_t x) noexcept

    # --- C API -------------------------------------------------------------------------
    cdef int add_range(self, uint64_t start, uint64_t stop) except -1
    cdef int subtract_range(self, uint64_t start, uint64_t stop) except -1
    cdef bint contains(self, uint64_t x) noexcept
    cdef bint covers_range(self, uint64_t start, uint64_t stop) noexcept
    cdef uint64_t overlap(self, uint64_t start, uint64_t stop) noexcept
    cdef uint64_t total_c(self) noexcept
    cdef void clear_c(self) noexcept
    cdef void shrink_c(self) noexcept      # give back unused capacity (all when empty)
    cdef int shift_c(self, uint64_t* start, uint64_t* stop) noexcept

    cdef inline Py_ssize_t count(self) noexcept:
        return self._n

    cdef inline uint64_t start_at(self, Py_ssize_t i) noexcept:
        return self._r[2 * i]

    cdef inline uint64_t stop_at(self, Py_ssize_t i) noexcept:
        return self._r[2 * i + 1]
