"""Server side of the aioquic / qh3 loopback comparisons, run as a separate process.

``python bench/quic_lib_peer.py LIB MODE CERT KEY`` (LIB is ``aioquic`` or ``qh3``, MODE is
``sink`` or ``echo``) serves raw QUIC streams on 127.0.0.1:0, prints ``PORT <n>`` and serves
until killed:

* ``sink``: count bytes on each stream; at end of stream answer ``done <bytes>`` on it;
* ``echo``: send every chunk of stream data back on the stream it came on.

Replies are queued from the event handler and leave with the protocol's own ``transmit`` after
each received datagram's events, so the replies to one datagram share packets.
"""
from __future__ import annotations

import asyncio
import importlib
import sys


def make_protocol(lib, mode):
    base = importlib.import_module(f"{lib}.asyncio").QuicConnectionProtocol
    events = importlib.import_module(f"{lib}.quic.events")

    class Server(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.counts = {}

        def quic_event_received(self, event):
            if not isinstance(event, events.StreamDataReceived):
                return
            sid = event.stream_id
            if mode == "echo":
                if event.data:
                    self._quic.send_stream_data(sid, event.data)
                return
            self.counts[sid] = self.counts.get(sid, 0) + len(event.data)
            if event.end_stream:
                self._quic.send_stream_data(sid, b"done %d" % self.counts[sid], end_stream=True)

    return Server


async def main(lib, mode, cert, key):
    mod = importlib.import_module(f"{lib}.asyncio")
    config = importlib.import_module(f"{lib}.quic.configuration").QuicConfiguration(
        is_client=False, alpn_protocols=["bench"], max_data=1 << 30, max_stream_data=1 << 30)
    config.load_cert_chain(cert, key)
    server = await mod.serve("127.0.0.1", 0, configuration=config,
                             create_protocol=make_protocol(lib, mode))
    print("PORT", server._transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.sleep(300)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
