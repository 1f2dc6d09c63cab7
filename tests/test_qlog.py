"""qlog traces written by connections: JSON-SEQ structure as draft-ietf-quic-qlog describes."""
from __future__ import annotations

import json
import os

from dquic.config import Configuration
from dquic.testing import LinkConfig
from dquic.testing.apps import make_pair

KNOWN = {"connectivity:connection_started", "connectivity:connection_closed",
         "transport:packet_sent", "transport:packet_received", "transport:packet_dropped",
         "recovery:packet_lost", "recovery:metrics_updated"}


def _read_seq(path):
    raw = open(path, encoding="utf-8").read()
    assert raw.startswith("\x1e")
    records = [json.loads(chunk) for chunk in raw.split("\x1e") if chunk.strip()]
    return records[0], records[1:]


def test_qlog_trace_structure(tmp_path):
    qdir = str(tmp_path / "qlog")
    ccfg = Configuration(qlog_dir=qdir)
    scfg = Configuration(is_client=False, qlog_dir=qdir)
    net, client, server, conn = make_pair(LinkConfig(delay=0.01, loss=0.05), seed=3,
                                          client_config=ccfg, server_config=scfg)
    conn.send_message(1, os.urandom(300_000))
    net.run(until=lambda: server.count(1) == 1, max_time=30)
    conn.close()
    net.run(until=lambda: not client.endpoint.connections and not server.endpoint.connections,
            max_time=net.now + 10)
    files = sorted(os.listdir(qdir))
    assert len(files) == 2
    assert {f.rsplit("_", 1)[1] for f in files} == {"client.sqlog", "server.sqlog"}
    for name in files:
        header, events = _read_seq(os.path.join(qdir, name))
        assert header["qlog_format"] == "JSON-SEQ" and header["qlog_version"]
        vp = header["trace"]["vantage_point"]["type"]
        assert vp in ("client", "server") and name.endswith(vp + ".sqlog")
        assert header["trace"]["common_fields"]["ODCID"] == conn.original_dcid.hex()
        names = [e["name"] for e in events]
        assert set(names) <= KNOWN, set(names) - KNOWN
        times = [e["time"] for e in events]
        assert times == sorted(times) and all(isinstance(t, (int, float)) for t in times)
        for e in events:
            assert isinstance(e["data"], dict)
            if e["name"] in ("transport:packet_sent", "transport:packet_received"):
                hdr = e["data"]["header"]
                assert hdr["packet_type"] in ("initial", "handshake", "1RTT")
                assert isinstance(hdr["packet_number"], int)
                assert isinstance(e["data"]["frames"], list)
                assert all("frame_type" in f for f in e["data"]["frames"])
        assert "transport:packet_sent" in names and "transport:packet_received" in names
        assert "recovery:metrics_updated" in names
        assert names[-1] == "connectivity:connection_closed"
    _, cevents = _read_seq(os.path.join(qdir, [f for f in files if f.endswith("client.sqlog")][0]))
    # with 5 % loss the sender reports losses, and stream frames carry offsets
    assert any(e["name"] == "recovery:packet_lost" for e in cevents)
    frames = [f for e in cevents if e["name"] == "transport:packet_sent" for f in e["data"]["frames"]]
    assert any(f["frame_type"] == "stream" and "offset" in f for f in frames)
