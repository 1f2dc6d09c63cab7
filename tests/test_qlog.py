"""qlog traces written by connections: qlog 0.3 JSON-SEQ (draft-ietf-quic-qlog-main-schema-05)
with the QUIC events of draft-ietf-quic-qlog-quic-events-04, validated against the JSON Schema
tests/qlog_schema.json written from those drafts' definitions."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jsonschema
import pytest

from dquic import qlog
from dquic._frames import AckFrame, MaxStreamsFrame, StreamFrame
from dquic.config import Configuration
from dquic.testing import LinkConfig
from dquic.testing.apps import make_pair

SCHEMA = json.loads((Path(__file__).resolve().parent / "qlog_schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _read_seq(path):
    raw = open(path, encoding="utf-8").read()
    assert raw.startswith("\x1e")
    records = [json.loads(chunk) for chunk in raw.split("\x1e") if chunk.strip()]
    return records[0], records[1:]


def _validate(path):
    """Every record of a JSON-SEQ trace against the schema: a header, then events."""
    header, events = _read_seq(path)
    assert "qlog_format" in header and not any("qlog_format" in e for e in events)
    for record in [header] + events:
        errors = sorted(VALIDATOR.iter_errors(record), key=lambda e: list(e.path))
        assert not errors, f"{path}: {record}\n" + "\n".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    return header, events


@pytest.fixture(scope="module")
def lossy_traces(tmp_path_factory):
    """Traces of both ends of a simulated 300 kB transfer over a lossy, reordering link."""
    qdir = str(tmp_path_factory.mktemp("qlog"))
    started = time.time() * 1000.0
    ccfg = Configuration(qlog_dir=qdir)
    scfg = Configuration(is_client=False, qlog_dir=qdir)
    link = LinkConfig(delay=0.01, loss=0.05, reorder=0.02, duplicate=0.01)
    net, client, server, conn = make_pair(link, seed=3, client_config=ccfg, server_config=scfg)
    conn.send_message(1, os.urandom(300_000))
    net.run(until=lambda: server.count(1) == 1, max_time=30)
    conn.close()
    net.run(until=lambda: not client.endpoint.connections and not server.endpoint.connections,
            max_time=net.now + 10)
    files = sorted(os.listdir(qdir))
    return {"dir": qdir, "files": files, "odcid": conn.original_dcid.hex(),
            "wall": (started, time.time() * 1000.0)}


def test_qlog_trace_structure(lossy_traces):
    qdir, files = lossy_traces["dir"], lossy_traces["files"]
    assert len(files) == 2
    assert {f.rsplit("_", 1)[1] for f in files} == {"client.sqlog", "server.sqlog"}
    for name in files:
        header, events = _read_seq(os.path.join(qdir, name))
        assert header["qlog_format"] == "JSON-SEQ" and header["qlog_version"] == "0.3"
        vp = header["trace"]["vantage_point"]["type"]
        assert vp in ("client", "server") and name.endswith(vp + ".sqlog")
        common = header["trace"]["common_fields"]
        assert common["ODCID"] == common["group_id"] == lossy_traces["odcid"]
        # relative times count from reference_time, the wall clock when the trace started
        assert common["time_format"] == "relative"
        lo, hi = lossy_traces["wall"]
        assert lo - 1 <= common["reference_time"] <= hi + 1
        names = [e["name"] for e in events]
        times = [e["time"] for e in events]
        assert times == sorted(times) and times[0] == 0
        assert "transport:packet_sent" in names and "transport:packet_received" in names
        assert "recovery:metrics_updated" in names
        assert names[0] == "connectivity:connection_started"
        # the close is traced once; after it only the closing period's packets (the
        # CONNECTION_CLOSE with its ACK, the peer's answer) and what the ACK in the answer
        # does to recovery
        assert names.count("connectivity:connection_closed") == 1
        tail = names[names.index("connectivity:connection_closed") + 1:]
        assert set(tail) <= {"transport:packet_sent", "transport:packet_received",
                             "recovery:metrics_updated", "recovery:congestion_state_updated"}
        closes = [f for e in events if e["name"] in ("transport:packet_sent",
                                                     "transport:packet_received")
                  for f in e["data"]["frames"] if f["frame_type"] == "connection_close"]
        assert closes  # the close and the answer to it are in both traces


def test_real_traces_validate_against_the_schema(lossy_traces):
    for name in lossy_traces["files"]:
        _validate(os.path.join(lossy_traces["dir"], name))


def test_real_traces_carry_what_loss_debugging_needs(lossy_traces):
    client = [f for f in lossy_traces["files"] if f.endswith("client.sqlog")][0]
    _, events = _read_seq(os.path.join(lossy_traces["dir"], client))
    by_name = {}
    for e in events:
        by_name.setdefault(e["name"], []).append(e["data"])
    # with 5 % loss the sender reports losses by packet number, and what it sent is in the trace
    lost = by_name["recovery:packet_lost"]
    sent = {(d["header"]["packet_type"], d["header"]["packet_number"]) for d in by_name["transport:packet_sent"]}
    assert lost and all((d["header"]["packet_type"], d["header"]["packet_number"]) in sent for d in lost)
    frames = [f for d in by_name["transport:packet_sent"] for f in d["frames"]]
    assert any(f["frame_type"] == "stream" and f["length"] > 0 for f in frames)
    assert not any(f.get("fin") is False for f in frames)  # fin is written only when true
    # the acknowledgements the client received say which packets arrived
    acks = [f for d in by_name["transport:packet_received"] for f in d["frames"] if f["frame_type"] == "ack"]
    assert acks and all(f["acked_ranges"] for f in acks)
    assert all(len(r) in (1, 2) and r[0] <= r[-1] for f in acks for r in f["acked_ranges"])
    # metrics: only what changed, and never an empty update; the first one has them all
    metrics = by_name["recovery:metrics_updated"]
    assert metrics and all(metrics)
    assert {"congestion_window", "bytes_in_flight", "smoothed_rtt", "min_rtt"} <= metrics[0].keys()
    assert all(m.get("congestion_window", 1) > 0 and m.get("smoothed_rtt", 1) > 0 for m in metrics)
    # loss at 5 %: the window was reduced, so ssthresh is known and the state went to recovery
    assert any("ssthresh" in m for m in metrics)
    states = [d["new"] for d in by_name["recovery:congestion_state_updated"]]
    assert states[0] == "slow_start" and "recovery" in states
    assert all(a != b for a, b in zip(states, states[1:]))  # written only when it changes
    # the handshake installed the 1-RTT keys of both directions
    keys = by_name["security:key_updated"]
    assert {(k["key_type"], k["generation"], k["trigger"]) for k in keys} >= {
        ("client_1rtt_secret", 0, "tls"), ("server_1rtt_secret", 0, "tls")}
    closed = by_name["connectivity:connection_closed"][0]
    assert closed["owner"] == "local" and closed["trigger"] == "clean"


def _api_trace(tmp_path):
    return qlog.QlogTrace(str(tmp_path / "t.sqlog"), vantage_point="client", odcid=b"\x01\x02")


def test_trace_api_writes_every_event_validly(tmp_path):
    """What the connection can report beyond today's calls (packet_dropped, congestion state,
    key updates, ACK ranges and frame values in sent frames) is written in the drafts' shapes."""
    t = _api_trace(tmp_path)
    t.connection_started(1.0, ("192.0.2.1", 5000), ("2001:db8::1", 4433))
    # sent frames come in qlog form (what _Sent.frames_for_trace makes of a packet's records)
    t.packet_sent(1.0, 4, 7, 1200, [
        {"frame_type": "ack", "acked_ranges": [[0, 5], [7], [10, 12]], "ack_delay": 0.25},
        {"frame_type": "stream", "stream_id": 4, "offset": 0, "length": 100, "fin": True},
        {"frame_type": "crypto", "offset": 0, "length": 50},
        {"frame_type": "max_data", "maximum": 1 << 20},
        {"frame_type": "max_stream_data", "stream_id": 4, "maximum": 1 << 18},
        {"frame_type": "max_streams", "maximum": 100, "stream_type": "bidirectional"},
        {"frame_type": "reset_stream", "stream_id": 8, "error_code": 3, "final_size": 1000},
        {"frame_type": "stop_sending", "stream_id": 8, "error_code": 3},
        {"frame_type": "new_connection_id", "sequence_number": 2, "retire_prior_to": 1,
         "connection_id": "aa" * 8, "stateless_reset_token": "0f" * 16},
        {"frame_type": "retire_connection_id", "sequence_number": 1},
        {"frame_type": "datagram", "length": 30}, {"frame_type": "handshake_done"},
        {"frame_type": "ping"}], trigger="pto_probe")
    # a frame whose values a record does not keep: named by its wire type
    t.packet_sent(1.1, 4, 8, 60, [{"frame_type": "ack"},
                                  {"frame_type": "unknown", "frame_type_value": 0x18}])
    t.packet_received(1.2, 4, 3, 80, [AckFrame([(0, 6), (10, 13)], 5), StreamFrame(4, 0, b"xy", True),
                                      MaxStreamsFrame(9)])
    t.packet_dropped(1.3, 1200, "decryption_failure", packet_type=4, pn=9)
    t.packet_dropped(1.4, 1200, "duplicate")
    t.packet_lost(1.5, 4, 7, [{"frame_type": "stream", "stream_id": 4, "offset": 0, "length": 100}],
                  trigger="time_threshold")
    t.metrics_updated(1.6, cwnd=12000, bytes_in_flight=2400, smoothed_rtt=0.02, min_rtt=0.01,
                      latest_rtt=0.03, rttvar=0.005, ssthresh=float("inf"), pto_count=1)
    t.congestion_state_updated(1.6, "slow_start")
    t.metrics_updated(1.7, cwnd=6000, bytes_in_flight=2400, smoothed_rtt=0.02, min_rtt=0.01,
                      latest_rtt=0.03, rttvar=0.005, ssthresh=6000)
    t.congestion_state_updated(1.7, "recovery")
    t.congestion_state_updated(1.75, "recovery")  # no change: not written
    t.metrics_updated(1.8, cwnd=6000, bytes_in_flight=0, smoothed_rtt=0.02, min_rtt=0.01,
                      latest_rtt=0.03, rttvar=0.005, ssthresh=6000)
    t.metrics_updated(1.85, cwnd=6000, bytes_in_flight=0, smoothed_rtt=0.02, min_rtt=0.01,
                      latest_rtt=0.03, rttvar=0.005, ssthresh=6000)  # nothing new: not written
    t.congestion_state_updated(1.8, "congestion_avoidance")
    t.congestion_state_updated(1.82, "slow_start", persistent_congestion_events=1)
    t.key_updated(1.9, "client_1rtt_secret")
    t.key_updated(2.0, "server_1rtt_secret", trigger="remote_update")
    t.keys_updated(2.02, 0, "tls")
    t.keys_updated(2.03, 0, "local_update")  # that generation was written: nothing
    t.keys_updated(2.05, 1, "remote_update")
    t.connection_closed(2.1, 0x0A, "bad frame", by_peer=True)
    t.close()
    _, events = _validate(t.path)
    sent = [e["data"] for e in events if e["name"] == "transport:packet_sent"]
    assert sent[0]["frames"][0] == {"frame_type": "ack", "acked_ranges": [[0, 5], [7], [10, 12]],
                                    "ack_delay": 0.25}
    assert sent[0]["frames"][3] == {"frame_type": "max_data", "maximum": 1 << 20}
    assert sent[0]["trigger"] == "pto_probe"
    assert [f.get("frame_type_value") for f in sent[1]["frames"]] == [None, 0x18]
    received = [e["data"] for e in events if e["name"] == "transport:packet_received"][0]["frames"]
    assert received[0]["acked_ranges"] == [[0, 5], [10, 12]]
    assert received[1] == {"frame_type": "stream", "stream_id": 4, "offset": 0, "length": 2, "fin": True}
    assert received[2] == {"frame_type": "max_streams", "maximum": 9, "stream_type": "bidirectional"}
    dropped = [e["data"] for e in events if e["name"] == "transport:packet_dropped"]
    assert dropped[0]["trigger"] == "decryption_failure" and dropped[0]["header"]["packet_number"] == 9
    assert dropped[1] == {"raw": {"length": 1200}, "trigger": "general", "details": {"reason": "duplicate"}}
    metrics = [e["data"] for e in events if e["name"] == "recovery:metrics_updated"]
    assert metrics == [
        {"congestion_window": 12000, "bytes_in_flight": 2400, "smoothed_rtt": 20.0,
         "min_rtt": 10.0, "latest_rtt": 30.0, "rtt_variance": 5.0, "pto_count": 1},
        {"congestion_window": 6000, "ssthresh": 6000},
        {"bytes_in_flight": 0}]
    states = [e["data"] for e in events if e["name"] == "recovery:congestion_state_updated"]
    assert states == [{"new": "slow_start"}, {"old": "slow_start", "new": "recovery"},
                      {"old": "recovery", "new": "congestion_avoidance"},
                      {"old": "congestion_avoidance", "new": "slow_start",
                       "trigger": "persistent_congestion"}]
    keys = [e["data"] for e in events if e["name"] == "security:key_updated"]
    assert [(k["key_type"][:6], k["generation"], k["trigger"]) for k in keys] == [
        ("client", 1, "local_update"), ("server", 2, "remote_update"),
        ("client", 0, "tls"), ("server", 0, "tls"),
        ("client", 1, "remote_update"), ("server", 1, "remote_update")]
    assert all(k["new"] == "" for k in keys)
    closed = [e["data"] for e in events if e["name"] == "connectivity:connection_closed"][0]
    assert closed == {"owner": "remote", "reason": "bad frame", "connection_code": "protocol_violation",
                      "trigger": "error"}


@pytest.mark.parametrize("kwargs,expected", [
    (dict(error_code=0, reason="", by_peer=False), {"connection_code": "no_error", "trigger": "clean"}),
    (dict(error_code=7, reason="bye", by_peer=False, application=True),
     {"application_code": 7, "trigger": "application"}),
    (dict(error_code=0, reason="", by_peer=True, application=True),
     {"application_code": 0, "trigger": "clean"}),
    (dict(error_code=0, reason="idle timeout", by_peer=False, timeout=True), {"trigger": "idle_timeout"}),
    (dict(error_code=0, reason="handshake timeout", by_peer=False, timeout=True),
     {"trigger": "handshake_timeout"}),
    (dict(error_code=0, reason="stateless reset", by_peer=True), {"trigger": "stateless_reset"}),
    (dict(error_code=0x101, reason="key", by_peer=True), {"connection_code": "crypto_error_0x101", "trigger": "error"}),
    (dict(error_code=0x2000, reason="x", by_peer=True), {"connection_code": 0x2000, "trigger": "error"}),
])
def test_connection_closed_codes(tmp_path, kwargs, expected):
    t = _api_trace(tmp_path)
    t.connection_closed(0.0, **kwargs)
    t.close()
    _, events = _validate(t.path)
    assert expected.items() <= events[0]["data"].items()


def test_schema_rejects_what_draft_forbids():
    """The fixture is not vacuous: shapes the drafts do not allow fail."""
    bad = [
        {"time": 0, "name": "transport:packet_sent", "data": {"header": {"packet_type": "1RTT"},
                                                             "frames": [{"frame_type": "max_data"}]}},
        {"time": 0, "name": "transport:packet_sent", "data": {"header": {"packet_type": "1RTT"}, "frames": [
            {"frame_type": "stream", "stream_id": 0, "offset": 0, "length": 1, "fin": False}]}},
        {"time": 0, "name": "connectivity:connection_closed", "data": {"error_code": 1}},
        {"time": 0, "name": "transport:packet_dropped", "data": {"trigger": "duplicate"}},
        {"time": 0, "name": "transport:packet_lost", "data": {}},
        {"qlog_format": "JSON-SEQ", "qlog_version": "0.4", "trace": {}},
    ]
    for record in bad:
        assert not VALIDATOR.is_valid(record), record


def test_sent_acks_carry_ranges_in_real_traces(lossy_traces):
    """Every ACK a connection sent is in its trace with its ranges and delay, and they are the
    ranges the peer decoded from that packet (matched by packet number in the peer's trace)."""
    traces = {}
    for name in lossy_traces["files"]:
        traces[name.rsplit("_", 1)[1].split(".")[0]] = _read_seq(os.path.join(lossy_traces["dir"], name))[1]
    for sender, receiver in (("server", "client"), ("client", "server")):
        sent = {}
        for e in traces[sender]:
            if e["name"] == "transport:packet_sent":
                for f in e["data"]["frames"]:
                    if f["frame_type"] == "ack":
                        sent[(e["data"]["header"]["packet_type"], e["data"]["header"]["packet_number"])] = f
        assert sent and all(f["acked_ranges"] and f["ack_delay"] >= 0 for f in sent.values())
        # with loss on the link, some acknowledgements had gaps (more than one range)
        assert any(len(f["acked_ranges"]) > 1 for f in sent.values())
        matched = 0
        for e in traces[receiver]:
            if e["name"] != "transport:packet_received":
                continue
            key = (e["data"]["header"]["packet_type"], e["data"]["header"]["packet_number"])
            for f in e["data"]["frames"]:
                if f["frame_type"] == "ack":
                    assert f["acked_ranges"] == sent[key]["acked_ranges"], key
                    matched += 1
        assert matched >= min(5, len(sent) // 2), (sender, matched, len(sent))


def test_dropped_packets_in_real_traces(lossy_traces):
    events = []
    for name in lossy_traces["files"]:
        events += _read_seq(os.path.join(lossy_traces["dir"], name))[1]
    # the link duplicates 1 % of the datagrams: the receiving end drops the copies
    assert any(e["name"] == "transport:packet_dropped" for e in events)


def _events_by_role(qdir, roles=("client", "server")):
    out = {}
    for name in os.listdir(qdir):
        if not name.endswith(tuple(r + ".sqlog" for r in roles)):
            continue  # (a live connection's trace is not flushed yet)
        header, events = _validate(os.path.join(qdir, name))
        out[header["trace"]["vantage_point"]["type"]] = events
    return out


def _traced_pair(tmp_path, link=None, seed=1, **client_options):
    qdir = str(tmp_path)
    ccfg = Configuration(qlog_dir=qdir, **client_options)
    scfg = Configuration(is_client=False, qlog_dir=qdir, idle_timeout=client_options.get("idle_timeout", 30.0))
    net, client, server, conn = make_pair(link or LinkConfig(delay=0.01), seed=seed,
                                          client_config=ccfg, server_config=scfg)
    return qdir, net, client, server, conn


def test_real_traces_report_key_updates(tmp_path):
    """security:key_updated: the handshake's 1-RTT keys (generation 0, "tls"), then each key
    update (RFC 9001 §6) with its generation, "local_update" where it started and
    "remote_update" where the peer followed."""
    # (datagrams of one size: which side reaches 40 packets first depends on the sizes)
    qdir, net, client, server, conn = _traced_pair(tmp_path, key_update_interval=40,
                                                   mtu_discovery=False)
    conn.send_message(1, os.urandom(200_000))
    net.run(until=lambda: server.count(1) == 1, max_time=30)
    conn.close()
    net.run(until=lambda: not client.endpoint.connections and not server.endpoint.connections,
            max_time=net.now + 10)
    events = _events_by_role(qdir)
    updates = {}
    for role, evs in events.items():
        keys = [e["data"] for e in evs if e["name"] == "security:key_updated"]
        assert keys[:2] == [
            {"key_type": "client_1rtt_secret", "new": "", "trigger": "tls", "generation": 0},
            {"key_type": "server_1rtt_secret", "new": "", "trigger": "tls", "generation": 0}]
        # both directions move together, one generation at a time
        gens = [k["generation"] for k in keys]
        assert gens == sorted(gens) and gens[::2] == gens[1::2] == list(range(len(gens) // 2))
        updates[role] = {k["generation"]: k["trigger"] for k in keys[2:]}
    assert len(updates["client"]) >= 3  # ~165 packets at 40 per key phase
    assert set(updates["client"].values()) == {"local_update"}
    assert updates["server"] == {g: "remote_update" for g in updates["client"]}


def test_real_traces_say_how_connections_ended(tmp_path):
    """connectivity:connection_closed with the draft's trigger and codes for an application
    close with an error code, an idle timeout and a stateless reset."""
    from dquic.testing.apps import SERVER_ADDR

    # the application closes with its error code: "application" on both sides
    qdir, net, client, server, conn = _traced_pair(tmp_path / "app")
    net.run(until=lambda: conn.is_established, max_time=5)
    conn.close(7, "bye")
    net.run(until=lambda: not client.endpoint.connections and not server.endpoint.connections,
            max_time=net.now + 10)
    closed = {role: [e["data"] for e in evs if e["name"] == "connectivity:connection_closed"]
              for role, evs in _events_by_role(qdir).items()}
    assert closed["client"] == [{"owner": "local", "reason": "bye", "application_code": 7,
                                 "trigger": "application"}]
    assert closed["server"] == [{"owner": "remote", "reason": "bye", "application_code": 7,
                                 "trigger": "application"}]

    # nothing more is sent: both ends time out idle
    qdir, net, client, server, conn = _traced_pair(tmp_path / "idle", idle_timeout=2.0)
    net.run(until=lambda: conn.is_established, max_time=5)
    net.run(until=lambda: not client.endpoint.connections and not server.endpoint.connections,
            max_time=net.now + 10)
    for role, evs in _events_by_role(qdir).items():
        assert evs[-1]["name"] == "connectivity:connection_closed"
        assert evs[-1]["data"] == {"owner": "local", "reason": "idle timeout", "trigger": "idle_timeout"}

    # the server lost the connection's state: its stateless reset ends the client's
    qdir, net, client, server, conn = _traced_pair(tmp_path / "reset")
    net.run(until=lambda: conn.is_established, max_time=5)
    token = conn.reset_token
    assert token is not None
    client.endpoint.receive_datagram(bytes([0x47]) + bytes(30) + token, SERVER_ADDR, net.now)
    evs = _events_by_role(qdir, ("client",))["client"]
    assert evs[-1]["name"] == "connectivity:connection_closed"
    assert evs[-1]["data"] == {"owner": "remote", "reason": "stateless reset",
                               "trigger": "stateless_reset"}
