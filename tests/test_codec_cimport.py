"""The C-level API in dquic/_codec.pxd and dquic/_frames.pxd can be cimported and used by another compiled module.

Builds a tiny extension in a temporary directory (a few seconds); skipped when no C compiler
is available.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENT = textwrap.dedent('''
    # cython: language_level=3
    from libc.stdint cimport uint64_t
    from dquic._codec cimport Buffer, PacketHeader, pull_header, c_varint_size
    from dquic._frames cimport (pull_stream_frame_header, c_push_stream_frame_header,
                                c_stream_frame_header_size)

    def roundtrip(uint64_t sid, uint64_t off, uint64_t length, bint fin):
        cdef Buffer buf = Buffer(capacity=64)
        c_push_stream_frame_header(buf, sid, off, length, fin)
        assert buf._pos == c_stream_frame_header_size(sid, off, length)
        cdef uint64_t v
        buf.c_push_varint(300)
        data = buf.data + bytes(length)
        cdef Buffer rb = Buffer(data)
        cdef uint64_t ftype, a, b, c
        cdef bint f
        rb.c_pull_uint(1, &ftype)
        pull_stream_frame_header(rb, ftype, &a, &b, &c, &f)
        return a, b, c, f, c_varint_size(300)

    def parse_borrowed(bytes datagram, int dcid_len):
        # retarget a capacity-0 buffer at borrowed memory, as the connection does
        cdef Buffer rb = Buffer(capacity=0)
        rb._base = <unsigned char*>(<char*>datagram)
        rb._size = len(datagram)
        rb._pos = 0
        cdef PacketHeader hdr = pull_header(rb, dcid_len)
        return hdr.dcid, hdr.pn_offset
''')

SETUP = textwrap.dedent('''
    from setuptools import Extension, setup
    from Cython.Build import cythonize
    setup(ext_modules=cythonize([Extension("codec_client", ["codec_client.pyx"])],
                                include_path=[{repo!r}], quiet=True))
''')


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_cimport_codec_from_another_module(tmp_path):
    (tmp_path / "codec_client.pyx").write_text(CLIENT)
    (tmp_path / "setup.py").write_text(SETUP.format(repo=REPO))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    script = textwrap.dedent('''
        import codec_client
        assert codec_client.roundtrip(5, 1000, 16, True) == (5, 1000, 16, True, 2)
        assert codec_client.roundtrip(2**62 - 1, 0, 0, False) == (2**62 - 1, 0, 0, False, 2)
        assert codec_client.parse_borrowed(b"\\x41" + b"D" * 8 + b"\\x00\\x01rest", 8) == (b"D" * 8, 9)
        import gc; gc.collect()
        print("ok")
    ''')
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
