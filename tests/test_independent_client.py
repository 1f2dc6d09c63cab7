"""A second, minimal client written from PROTOCOL.md alone talks to a dquic server over UDP.

Nothing of dquic is used on the client side: varints, headers, frames, message framing, the
CRYPTO stream, transport parameters, the NK handshake (``protocol_vectors``' Noise steps) and
1-RTT packet protection are written here from the document with ``cryptography``'s primitives.
The server is an ordinary ``dquic.DQUIC`` that echoes messages upper-cased. If the document
left out something a second implementation needs, the exchange fails.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

import protocol_vectors as pv
from dquic import DQUIC, KeyPair

VERSION = 0x44510001


# --- §2 variable-length integers ------------------------------------------------------------
def varint(v: int) -> bytes:
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack("!H", v | 0x4000)
    if v < 1 << 30:
        return struct.pack("!I", v | 0x80000000)
    return struct.pack("!Q", v | 0xC000000000000000)


def read_varint(b: bytes, i: int):
    n = 1 << (b[i] >> 6)
    v = b[i] & 0x3F
    for j in range(1, n):
        v = (v << 8) | b[i + j]
    return v, i + n


# --- §7 frames: a reader for every frame type ----------------------------------------------
def parse_frames(p: bytes) -> list:
    out, i = [], 0
    while i < len(p):
        t, i = read_varint(p, i)
        if t == 0x00:
            continue
        if t == 0x01 or t == 0x1E:
            out.append((t,))
        elif t in (0x02, 0x03):
            largest, i = read_varint(p, i)
            _delay, i = read_varint(p, i)
            count, i = read_varint(p, i)
            _first, i = read_varint(p, i)
            for _ in range(2 * count + (3 if t == 0x03 else 0)):
                _, i = read_varint(p, i)
            out.append((t, largest))
        elif t == 0x04:
            sid, i = read_varint(p, i)
            code, i = read_varint(p, i)
            size, i = read_varint(p, i)
            out.append((t, sid, code, size))
        elif t in (0x05, 0x11, 0x15):
            a, i = read_varint(p, i)
            b, i = read_varint(p, i)
            out.append((t, a, b))
        elif t == 0x06:
            off, i = read_varint(p, i)
            n, i = read_varint(p, i)
            out.append((t, off, p[i:i + n]))
            i += n
        elif t == 0x07:
            n, i = read_varint(p, i)
            out.append((t, p[i:i + n]))
            i += n
        elif 0x08 <= t <= 0x0F:
            sid, i = read_varint(p, i)
            off = 0
            if t & 0x04:
                off, i = read_varint(p, i)
            if t & 0x02:
                n, i = read_varint(p, i)
            else:
                n = len(p) - i
            out.append((0x08, sid, off, p[i:i + n], bool(t & 0x01)))
            i += n
        elif t in (0x10, 0x12, 0x14, 0x16, 0x19):
            a, i = read_varint(p, i)
            out.append((t, a))
        elif t == 0x18:
            seq, i = read_varint(p, i)
            prior, i = read_varint(p, i)
            n = p[i]
            out.append((t, seq, prior, p[i + 1:i + 1 + n], p[i + 1 + n:i + 17 + n]))
            i += 17 + n
        elif t in (0x1A, 0x1B):
            out.append((t, p[i:i + 8]))
            i += 8
        elif t in (0x1C, 0x1D):
            code, i = read_varint(p, i)
            if t == 0x1C:
                _ftype, i = read_varint(p, i)
            n, i = read_varint(p, i)
            out.append((t, code, p[i:i + n]))
            i += n
        elif t in (0x30, 0x31):
            if t == 0x31:
                n, i = read_varint(p, i)
            else:
                n = len(p) - i
            out.append((t, p[i:i + n]))
            i += n
        else:
            raise AssertionError(f"unknown frame type {t:#x}")
    return out


# --- §12.2 transport parameters --------------------------------------------------------------
def encode_params(params: dict) -> bytes:
    out = b""
    for pid, value in params.items():
        body = value if isinstance(value, bytes) else varint(value)
        out += varint(pid) + varint(len(body)) + body
    return out


def decode_params(b: bytes) -> dict:
    out, i = {}, 0
    while i < len(b):
        pid, i = read_varint(b, i)
        n, i = read_varint(b, i)
        out[pid] = b[i:i + n]
        i += n
    return out


# --- §14 packet protection -------------------------------------------------------------------
class Keys:
    def __init__(self, secret: bytes) -> None:
        expand = lambda label, n: HKDFExpand(hashes.SHA256(), n, label).derive(secret)  # noqa: E731
        self.aead = AESGCM(expand(b"dquic key", 32))
        self.iv = expand(b"dquic iv", 12)
        self.hp = expand(b"dquic hp", 32)

    def nonce(self, pn: int) -> bytes:
        return bytes(a ^ b for a, b in zip(self.iv, pn.to_bytes(12, "big")))

    def mask(self, sample: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self.hp), modes.ECB()).encryptor()
        return enc.update(sample) + enc.finalize()


def seal_short(keys: Keys, dcid: bytes, pn: int, payload: bytes) -> bytes:
    pn_len = 4
    header = bytes([0x40 | (pn_len - 1)]) + dcid + pn.to_bytes(pn_len, "big")
    sealed = keys.aead.encrypt(keys.nonce(pn), payload, header)
    mask = keys.mask(sealed[4 - pn_len:4 - pn_len + 16])
    first = header[0] ^ (mask[0] & 0x1F)
    return bytes([first]) + dcid + bytes(a ^ b for a, b in zip(header[-pn_len:], mask[1:])) + sealed


def open_short(keys: Keys, packet: bytes, dcid_len: int, largest: int):
    pn_off = 1 + dcid_len
    mask = keys.mask(packet[pn_off + 4:pn_off + 20])
    first = packet[0] ^ (mask[0] & 0x1F)
    pn_len = (first & 0x03) + 1
    truncated = int.from_bytes(bytes(a ^ b for a, b in zip(packet[pn_off:pn_off + pn_len], mask[1:])), "big")
    # §3: the full packet number closest to the next expected one
    expected, win = largest + 1, 1 << (8 * pn_len)
    pn = (expected & ~(win - 1)) | truncated
    if pn <= expected - win // 2:
        pn += win
    elif pn > expected + win // 2 and pn >= win:
        pn -= win
    header = bytes([first]) + packet[1:pn_off] + truncated.to_bytes(pn_len, "big")
    payload = keys.aead.decrypt(keys.nonce(pn), packet[pn_off + pn_len:], header)
    return pn, payload, first


# --- the client ------------------------------------------------------------------------------
class Client:
    def __init__(self, server_addr, server_key: bytes) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)
        self.addr = server_addr
        self.server_key = server_key
        self.odcid = os.urandom(8)
        self.scid = os.urandom(8)
        self.dcid = self.odcid
        self.crypto = {}  # offset -> bytes received on the handshake space's CRYPTO stream
        self.streams: dict = {}  # stream id -> bytes received
        self.largest_app = -1
        self.handshake_done = False

    def start(self) -> None:
        ctx = (b"dquic/1" + struct.pack("!I", VERSION) + bytes([len(self.odcid)]) + self.odcid
               + bytes([len(self.scid)]) + self.scid)
        prologue = b"dquic/1" + bytes([0x21]) + struct.pack("!H", len(ctx)) + ctx
        self.params = encode_params({0x04: 1 << 20, 0x05: 1 << 20, 0x08: 16, 0x01: 10_000,
                                     0x0F: self.scid})
        self.ephemeral = os.urandom(32)
        self.noise, body = pv.nk_start(prologue, self.server_key, self.ephemeral, self.params)
        message1 = bytes([0x21]) + body
        crypto = varint(len(message1)) + message1  # §12.1: framed like a stream's messages
        payload = bytes([0x06]) + varint(0) + varint(len(crypto)) + crypto
        pn = 0
        header = (bytes([0xC0 | 0x00]) + struct.pack("!I", VERSION) + bytes([len(self.dcid)]) + self.dcid
                  + bytes([len(self.scid)]) + self.scid + varint(0))  # Initial, 1-byte pn, no token
        pad = max(0, 1200 - len(header) - 2 - 1 - len(payload))
        payload += bytes(pad)  # PADDING frames: the datagram reaches 1200 bytes
        packet = header + struct.pack("!H", 0x4000 | (1 + len(payload))) + bytes([pn]) + payload
        self.sock.sendto(packet, self.addr)

    def _long(self, d: bytes, i: int) -> int:
        first = d[i]
        ptype = (first >> 4) & 0x03
        j = i + 5
        dl = d[j]
        j += 1 + dl
        sl = d[j]
        scid = d[j + 1:j + 1 + sl]
        j += 1 + sl
        if ptype == 0:
            n, j = read_varint(d, j)
            j += n
        length, j = read_varint(d, j)
        pn_len = (first & 0x03) + 1  # §14.6: no packet protection on handshake-phase packets
        payload = d[j + pn_len:j + length]
        if ptype == 2:
            self.dcid = scid  # §12.1 step 2: from the server's Handshake packets on
        for f in parse_frames(payload):
            if f[0] == 0x06:
                self.crypto[f[1]] = f[2]
        return j + length

    def handle(self, d: bytes) -> None:
        i = 0
        while i < len(d):
            if d[i] & 0x80:
                i = self._long(d, i)
                continue
            if getattr(self, "recv_keys", None) is None:
                break  # no 1-RTT keys yet (a 0.5-RTT packet coalesced with message 2): dropped (§6)
            pn, payload, _ = open_short(self.recv_keys, d[i:], len(self.scid), self.largest_app)
            self.largest_app = max(self.largest_app, pn)
            for f in parse_frames(payload):
                if f[0] == 0x1E:
                    self.handshake_done = True
                elif f[0] == 0x08:
                    self.streams.setdefault(f[1], {})[f[2]] = f[3]
            break  # a short-header packet ends the datagram (§6)

    def message2(self):
        data, off = b"", 0
        while off in self.crypto:
            data += self.crypto[off]
            off += len(self.crypto[off])
        if not data:
            return None
        n, i = read_varint(data, 0)
        return data[i:i + n] if len(data) >= i + n else None

    def stream_messages(self, sid: int) -> list:
        pieces, data, off = self.streams.get(sid, {}), b"", 0
        while off in pieces:
            data += pieces[off]
            off += len(pieces[off])
        out, i = [], 0
        while i < len(data):
            n, j = read_varint(data, i)
            if j + n > len(data):
                break
            out.append(data[j:j + n])
            i = j + n
        return out

    def pump(self, until, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not until():
            assert time.monotonic() < end, "no answer in time"
            try:
                self.handle(self.sock.recv(65536))
            except socket.timeout:
                continue


def test_second_implementation_talks_to_dquic():
    server_key = KeyPair.generate()
    stop = threading.Event()
    with DQUIC(identity=server_key) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.2)

        def echo():
            while not stop.is_set():
                try:
                    peer, messages = server.receive_from(65536)
                except TimeoutError:
                    continue
                server.send_to(peer, {sid: data.upper() for sid, data in messages.items()})

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        client = Client(server.local_address, server_key.public)
        try:
            client.start()
            client.pump(lambda: client.message2() is not None, 5.0)
            params, c2s, s2c = pv.nk_finish(client.noise, client.ephemeral, client.message2())
            theirs = decode_params(params)
            assert theirs[0x00] == client.odcid  # original_destination_connection_id
            assert theirs[0x0F] == client.dcid  # initial_source_connection_id
            send_keys, client.recv_keys = Keys(c2s), Keys(s2c)
            # a 1-RTT packet: one message on stream 4 (LEN bit set), then on stream 9 (LEN clear,
            # the frame runs to the end of the packet)
            msg4, msg9 = b"hello from a second implementation", b"and another stream"
            payload = (bytes([0x0A]) + varint(4) + varint(1 + len(msg4)) + varint(len(msg4)) + msg4
                       + bytes([0x08]) + varint(9) + varint(len(msg9)) + msg9)
            client.sock.sendto(seal_short(send_keys, client.dcid, 0, payload), client.addr)
            client.pump(lambda: client.stream_messages(4) and client.stream_messages(9), 5.0)
            assert client.stream_messages(4) == [msg4.upper()]
            assert client.stream_messages(9) == [msg9.upper()]
            client.pump(lambda: client.handshake_done, 5.0)
            # close (application CONNECTION_CLOSE, code 0): the server forgets the connection
            close = bytes([0x1D]) + varint(0) + varint(3) + b"bye"
            client.sock.sendto(seal_short(send_keys, client.dcid, 1, close), client.addr)
            end = time.monotonic() + 5.0
            while server.connections and time.monotonic() < end:
                time.sleep(0.02)
            assert not server.connections
        finally:
            stop.set()
            thread.join(5.0)
            client.sock.close()
