# C-level interface of dquic._events (see _events.pyx).

cdef class Event:
    pass


cdef class MessageReceived(Event):
    cdef readonly object stream_id


cdef MessageReceived message_received(object stream_id)
