"""Tests of the dquic pytest plugin (dquic/pytest_plugin.py), run through pytest's ``pytester``.

Each test writes a small test file that uses the plugin's fixtures, runs pytest on it and checks
the outcomes. The inner runs load the plugin explicitly (``-p dquic.pytest_plugin``) with entry
point autoloading disabled, so they work in a source tree that is not installed; the entry
point itself is checked separately when dquic is installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import dquic
import dquic.handshake  # noqa: F401  (see below)
import dquic.pytest_plugin as plugin
import dquic.sync  # noqa: F401

# pytester's in-process runs remove every module first imported during an inner run. The
# `cryptography` package cannot be imported twice (its compiled core keeps the first copy of its
# Python classes), so what the inner runs use is imported here, before any snapshot is taken.

pytest_plugins = ["pytester"]

# The DQUIC I/O thread and the relay wait in select() on a pipe: POSIX only for now.
needs_posix_sockets = pytest.mark.skipif(sys.platform == "win32",
                                         reason="DQUIC endpoints and the relay need POSIX select()")
FIXTURES = ("dquic_seed", "dquic_network", "dquic_link", "dquic_pair", "dquic_relay",
            "dquic_endpoints")
# where the dquic package under test lives (source tree or site-packages), for subprocesses
DQUIC_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(dquic.__file__)))


def _entry_point_installed() -> bool:
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group="pytest11")
    except TypeError:  # Python 3.9: entry_points() returns a dict
        eps = entry_points().get("pytest11", [])
    return any(ep.name == "dquic" and ep.value == "dquic.pytest_plugin" for ep in eps)


@pytest.fixture
def run(pytester, monkeypatch):
    """Run pytest in-process on the pytester directory with the plugin loaded explicitly."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def runner(*args):
        return pytester.runpytest("-p", "dquic.pytest_plugin", "-p", "no:cacheprovider", *args)

    return runner


# ------------------------------------------------------------------------------------------
# loading and registration


def test_fixtures_are_listed_with_their_documentation(pytester, run):
    pytester.makepyfile("def test_nothing(): pass")
    result = run("--fixtures")
    assert result.ret == 0
    out = result.stdout.str()
    for name in FIXTURES:
        assert name in out, name
    # each fixture is followed by the first line of its docstring
    result.stdout.fnmatch_lines([
        "dquic_seed -- *", "    The seed the dquic fixtures draw their randomness from.",
        "dquic_network -- *", "    A fresh simulated network*",
        "dquic_link -- *", "    A factory of *LinkConfig*",
        "dquic_pair -- *", "    A simulated dquic client and server*",
        "dquic_relay -- *", "    A factory of started in-process lossy UDP relays*",
        "dquic_endpoints -- *", "    A client and a server ``dquic.DQUIC`` endpoint*",
    ])


def test_markers_and_options_are_registered(pytester, run):
    pytester.makepyfile("def test_nothing(): pass")
    result = run("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.dquic_link(*", "@pytest.mark.dquic_endpoints(*"])
    result = run("--help")
    result.stdout.fnmatch_lines(["*--dquic-seed=N*", "*--dquic-timeout=SECONDS*"])


def test_report_header_shows_the_seed(pytester, run):
    pytester.makepyfile("def test_nothing(): pass")
    run().stdout.fnmatch_lines([f"dquic: seed={plugin.DEFAULT_SEED} (--dquic-seed)"])
    run("--dquic-seed=99").stdout.fnmatch_lines(["dquic: seed=99 (--dquic-seed)"])


def test_importing_the_plugin_adds_nothing_to_the_package_import():
    # pytest imports the plugin in every run of an environment where dquic is installed: beyond
    # the package itself, it must not pull in the simulator, the relay or anything else
    code = ("import sys, dquic; before = set(sys.modules); import dquic.pytest_plugin; "
            "extra = sorted(set(sys.modules) - before - {'dquic.pytest_plugin'}); "
            "print(extra); sys.exit(any(m.startswith('dquic') for m in extra))")
    env = dict(os.environ, PYTHONPATH=DQUIC_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not _entry_point_installed(), reason="dquic is not installed (no pytest11 entry point)")
@pytest.mark.parametrize("args, conftest", [
    ([], ""),
    ([], 'pytest_plugins = ["dquic.pytest_plugin"]'),
    (["-p", "dquic.pytest_plugin"], ""),
    (["-p", "dquic"], ""),
])
def test_installed_entry_point_loads_the_plugin(pytester, monkeypatch, args, conftest):
    """Installed: the fixtures need no -p, and an explicit -p (module or entry point name) or a
    conftest's ``pytest_plugins`` does not clash with the entry point."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setenv("PYTHONPATH", DQUIC_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if conftest:
        pytester.makeconftest(conftest)
    pytester.makepyfile("def test_seed(dquic_seed):\n    assert dquic_seed == 5\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--dquic-seed=5", *args)
    result.assert_outcomes(passed=1)


def test_loading_twice_by_module_name_is_harmless(pytester, run):
    pytester.makeconftest('pytest_plugins = ["dquic.pytest_plugin"]')
    pytester.makepyfile("def test_seed(dquic_seed):\n    assert dquic_seed == 3\n")
    run("--dquic-seed=3").assert_outcomes(passed=1)


def _refused(result, message):
    """pytest stopped with a usage error that says ``message``."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


# ------------------------------------------------------------------------------------------
# seed


def test_seed_sources(pytester, run):
    pytester.makepyfile(f"""
        import dquic.pytest_plugin as p

        def test_seed(dquic_seed, request):
            expected = request.config.getoption("dquic_seed")
            assert dquic_seed == (p.DEFAULT_SEED if expected is None else expected)
        """)
    run().assert_outcomes(passed=1)
    run("--dquic-seed=1234").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\ndquic_seed = 0x10\n")
    pytester.makepyfile(test_ini="def test_ini(dquic_seed):\n    assert dquic_seed == 16\n")
    run("test_ini.py").assert_outcomes(passed=1)
    run("test_ini.py", "--dquic-seed=17").assert_outcomes(failed=1)  # the option wins
    pytester.makeini("[pytest]\ndquic_seed = many\n")
    _refused(run("test_ini.py"), "dquic_seed ini value must be an integer")


def test_failure_report_names_the_seed(pytester, run):
    pytester.makepyfile("""
        def test_fails(dquic_pair):
            assert False, "boom"

        def test_fails_without_dquic():
            assert False, "plain"

        def test_passes(dquic_seed):
            pass
        """)
    result = run("--dquic-seed=4242")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert out.count("seed: 4242 (replay with --dquic-seed=4242)") == 1
    assert "simulated time reached" in out
    # only the test that used a dquic fixture gets the section
    plain = out[out.index("test_fails_without_dquic ____"):]
    assert "replay with" not in plain.split("short test summary")[0]


# ------------------------------------------------------------------------------------------
# simulator fixtures


def test_network_is_seeded_uses_marker_link_and_is_emptied(pytester, run):
    pytester.makepyfile("""
        import pytest
        from dquic.testing import SinkNode

        saved = []

        @pytest.mark.dquic_link(loss=0.25, delay=0.03)
        def test_network(dquic_network, dquic_seed):
            assert dquic_network.seed == dquic_seed
            assert dquic_network.default_link.loss == 0.25
            assert dquic_network.default_link.delay == 0.03
            dquic_network.add_node(SinkNode(), ("192.0.2.9", 9))
            saved.append(dquic_network)

        def test_emptied_after_the_test():
            assert saved and saved[0].addresses == []

        def test_default_link_without_marker(dquic_network):
            from dquic.testing import LinkConfig
            assert dquic_network.default_link == LinkConfig()
        """)
    run("-p", "no:randomly").assert_outcomes(passed=3)


def test_link_factory_merges_markers(pytester, run):
    pytester.makepyfile("""
        import pytest
        from dquic.testing import LinkConfig

        pytestmark = pytest.mark.dquic_link(delay=0.05, jitter=0.001)

        def test_module_marker(dquic_link):
            assert dquic_link() == LinkConfig(delay=0.05, jitter=0.001)

        @pytest.mark.dquic_link(loss=0.1, delay=0.02)
        def test_closest_marker_wins(dquic_link):
            cfg = dquic_link(reorder=0.2)
            assert (cfg.loss, cfg.delay, cfg.jitter, cfg.reorder) == (0.1, 0.02, 0.001, 0.2)
            assert dquic_link(loss=0.0).loss == 0.0

        @pytest.mark.dquic_link(LinkConfig(bandwidth=1e6, delay=0.2))
        def test_positional_config(dquic_link):
            cfg = dquic_link()
            assert (cfg.bandwidth, cfg.delay, cfg.jitter) == (1e6, 0.2, 0.0)

        def test_unknown_field(dquic_link):
            with pytest.raises(pytest.UsageError, match="bad dquic_link setting"):
                dquic_link(lossiness=0.5)

        def test_invalid_value(dquic_link):
            with pytest.raises(ValueError):
                dquic_link(loss=1.5)
        """)
    run().assert_outcomes(passed=5)


def test_pair_delivers_through_the_marker_link(pytester, run):
    pytester.makepyfile("""
        import pytest
        from dquic.testing.apps import CLIENT_ADDR, SERVER_ADDR

        MESSAGES = [bytes([i % 251]) * (i * 397) for i in range(40)]

        @pytest.mark.dquic_link(loss=0.05, delay=0.02, reorder=0.05)
        def test_lossy(dquic_pair):
            net, client, server, conn = dquic_pair
            dquic_pair.establish()
            assert conn.is_established
            assert dquic_pair.deliver(4, MESSAGES) == MESSAGES
            stats = net.link_stats(CLIENT_ADDR, SERVER_ADDR)
            assert stats.dropped_loss > 0 and stats.reordered > 0
            print("RESULT", net.now, stats.dropped_loss, stats.sent)

        @pytest.mark.dquic_link(delay=0.01, reverse={"delay": 0.01, "duplicate": 1.0})
        def test_reverse_direction(dquic_pair):
            dquic_pair.deliver(0, [b"x" * 5000])
            net = dquic_pair.network
            assert net.link_stats(CLIENT_ADDR, SERVER_ADDR).duplicated == 0
            assert net.link_stats(SERVER_ADDR, CLIENT_ADDR).duplicated > 0

        def test_default_link(dquic_pair):
            assert dquic_pair.deliver(2, [b"hello"]) == [b"hello"]
            assert dquic_pair.server.stream_messages(2) == [b"hello"]
        """)
    first = run("-s", "--dquic-seed=1")
    first.assert_outcomes(passed=3)
    again = run("-s", "--dquic-seed=1", "-k", "lossy")
    other = run("-s", "--dquic-seed=2", "-k", "lossy")
    line = lambda r: [l for l in r.outlines if "RESULT" in l]  # noqa: E731
    # same seed, same simulated run; another seed, another run
    assert line(first) == line(again) and len(line(first)) == 1
    assert line(other) != line(first)


# ------------------------------------------------------------------------------------------
# real-socket fixtures


@needs_posix_sockets
def test_relay_factory(pytester, run):
    pytester.makepyfile("""
        import socket
        import pytest

        saved = []

        def _sink():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            return s

        def test_forwards(dquic_relay, dquic_seed):
            server = _sink()
            relay = dquic_relay(server.getsockname())
            assert relay.loss == 0.0
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for i in range(5):
                    client.sendto(b"%d" % i, relay.address)
                got = sorted(server.recvfrom(100)[0] for _ in range(5))
                assert got == [b"0", b"1", b"2", b"3", b"4"]
                # counted on arrival, before forwarding: settled once all five came out
                assert relay.counters.received == 5 and relay.counters.dropped == 0
            finally:
                client.close(); server.close()
            saved.append(relay)

        def test_stopped_after_the_test():
            with pytest.raises(RuntimeError):
                saved[0].start()

        @pytest.mark.dquic_link(loss=1.0, delay=0.002)
        def test_marker_settings_apply(dquic_relay):
            server = _sink()
            relay = dquic_relay(server.getsockname())
            other = dquic_relay(server.getsockname(), loss=0.0)
            assert (relay.loss, relay.delay, other.loss, other.delay) == (1.0, 0.002, 0.0, 0.002)
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                client.sendto(b"lost", relay.address)
                client.sendto(b"kept", other.address)
                assert server.recvfrom(100)[0] == b"kept"
                server.settimeout(0.3)
                with pytest.raises(socket.timeout):
                    server.recvfrom(100)
            finally:
                client.close(); server.close()

        @pytest.mark.dquic_link(bandwidth=1e6)
        def test_unsupported_setting(dquic_relay):
            pass
        """)
    result = run("-p", "no:randomly")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*relay cannot emulate dquic_link setting(s) bandwidth*"])


@needs_posix_sockets
def test_endpoints_round_trip_direct_and_through_a_relay(pytester, run):
    pytester.makepyfile("""
        import pytest

        saved = []

        @pytest.mark.dquic_endpoints(linger=0.5, server_options={"linger": 0.25})
        def test_direct(dquic_endpoints):
            client, server, address, relay = dquic_endpoints
            assert relay is None and address == server.local_address[:2]
            assert address[0] == "127.0.0.1" and client.local_address[0] == "127.0.0.1"
            assert (client.linger, server.linger) == (0.5, 0.25)
            assert client.send_to(address, {0: b"ping", 4: b""}) == 4
            peer, data = server.receive_from(1 << 16)
            assert data == {0: b"ping", 4: b""}
            server.send_to(peer, {0: b"pong"})
            assert client.receive_from(1 << 16) == (address, {0: b"pong"})
            saved.append(dquic_endpoints)

        def test_closed_after_the_test():
            client, server = saved[0][:2]
            for endpoint in (client, server):
                with pytest.raises(OSError):
                    endpoint.send_to(("127.0.0.1", 9), {0: b"x"})

        @pytest.mark.dquic_link(loss=0.05, reorder=0.05, duplicate=0.05, delay=0.001)
        def test_through_relay(dquic_endpoints):
            client, server, address, relay = dquic_endpoints
            assert relay is not None and address == relay.address[:2]
            messages = [bytes([i]) * (i * 3001) for i in range(30)]
            for m in messages:
                client.send_to(address, {1: m})
            got = []
            while len(got) < len(messages):
                _, data = server.receive_from(1 << 20)
                got.append(data[1])
            assert got == messages
            assert relay.counters.forwarded > 0 and relay.counters.dropped > 0

        def test_timeout_applies(dquic_endpoints):
            assert dquic_endpoints.server.gettimeout() == 0.75
            with pytest.raises(TimeoutError):
                dquic_endpoints.server.receive_from(10)
        """)
    run("-p", "no:randomly", "--dquic-timeout=0.75").assert_outcomes(passed=4)


@needs_posix_sockets
def test_missing_module_gives_a_clear_failure(pytester, run, monkeypatch):
    monkeypatch.setitem(sys.modules, "dquic.testing.relay", None)  # import now raises ImportError
    pytester.makepyfile("""
        def test_relay(dquic_relay):
            pass
        """)
    result = run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the dquic_relay fixture needs dquic.testing.relay*"])


def test_bad_timeout_option(pytester, run):
    pytester.makepyfile("def test_t():\n    pass\n")
    _refused(run("--dquic-timeout=0"), "--dquic-timeout must be > 0")


def test_link_settings_helper(pytester, run):
    pytester.makepyfile("""
        import pytest
        from dquic.pytest_plugin import link_settings
        from dquic.testing import LinkConfig

        def test_no_marker(request):
            assert link_settings(request.node) == (None, None)

        @pytest.mark.dquic_link(loss=0.5, reverse=LinkConfig(delay=0.3))
        def test_reverse_config(request):
            forward, reverse = link_settings(request.node)
            assert forward == {"loss": 0.5}
            assert reverse["delay"] == 0.3 and reverse["loss"] == 0.0

        @pytest.mark.dquic_link(LinkConfig(), LinkConfig())
        def test_two_positional(request):
            with pytest.raises(pytest.UsageError, match="at most one positional"):
                link_settings(request.node)
        """)
    run().assert_outcomes(passed=3)


def test_star_imports_of_the_helpers_add_no_tests(pytester, run):
    """A user's test module that imports dquic's testing helpers collects only its own tests:
    no helper is named like a test."""
    pytester.makepyfile(test_helpers="""
        from dquic.testing import *
        from dquic.testing.apps import *
        from dquic.testing.sim import *
        from dquic.pytest_plugin import *

        def test_mine():
            assert make_pair and shared_identity().public
    """)
    result = run("--collect-only", "-q")
    assert [line for line in result.outlines if "::" in line] == ["test_helpers.py::test_mine"]
