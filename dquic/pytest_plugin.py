"""pytest fixtures for testing code built on dquic.

Installed with dquic and registered under the ``pytest11`` entry point ``dquic``, so the fixtures
are available in any test suite of an environment where dquic is installed. In a source checkout
that is not installed, load it explicitly: ``pytest -p dquic.pytest_plugin`` (or
``pytest_plugins = ["dquic.pytest_plugin"]`` in a root ``conftest.py``).

Fixtures (each documented in its own docstring):

* ``dquic_seed``      the seed every fixture draws its randomness from (``--dquic-seed``);
* ``dquic_network``   a fresh, seeded simulator :class:`dquic.testing.Network`;
* ``dquic_link``      a factory of :class:`dquic.testing.LinkConfig`, defaulting to the test's
  ``@pytest.mark.dquic_link(...)`` settings;
* ``dquic_pair``      a simulated client/server pair joined by the marker's link;
* ``dquic_relay``     a factory of in-process lossy UDP relays on loopback;
* ``dquic_endpoints`` a client and a server ``DQUIC`` endpoint on loopback (through a lossy relay
  when the test has a ``dquic_link`` marker).

Command-line options: ``--dquic-seed=N`` (default :data:`DEFAULT_SEED`) and
``--dquic-timeout=SECONDS`` (default :data:`DEFAULT_TIMEOUT`; the blocking-call timeout of the
``dquic_endpoints`` sockets). When a test that used one of these fixtures fails, its report gets a
``dquic`` section with the seed (and relay counters), so the failure can be replayed.

This module imports nothing from dquic at import time: pytest loads it in every run of an
environment where dquic is installed, and it must stay cheap and harmless there.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TIMEOUT",
    "DquicPair",
    "DquicEndpoints",
    "link_settings",
]

#: Seed used when ``--dquic-seed`` is not given: runs are reproducible by default.
DEFAULT_SEED = 20240601
#: Default blocking-call timeout (seconds) of the ``dquic_endpoints`` sockets.
DEFAULT_TIMEOUT = 30.0

#: The fields of ``LinkConfig`` that the UDP relay can emulate (same names, same meaning).
RELAY_FIELDS = ("loss", "duplicate", "reorder", "delay", "jitter", "reorder_delay")

_FIXTURES = frozenset(("dquic_seed", "dquic_network", "dquic_link", "dquic_pair", "dquic_relay",
                       "dquic_endpoints"))
_NOTES = pytest.StashKey[List[Callable[[], str]]]()


# --------------------------------------------------------------------------------------------
# pytest hooks


# The names this module may be registered under: the pytest11 entry point name (installed
# package) and the module name (``-p dquic.pytest_plugin`` / ``pytest_plugins = [...]``).
_PLUGIN_NAMES = ("dquic", __name__)


def pytest_plugin_registered(plugin: Any, manager: pytest.PytestPluginManager) -> None:
    # pluggy refuses one module registered under two names, which is what would happen with
    # ``-p dquic.pytest_plugin`` (or a conftest's ``pytest_plugins``) while the installed entry
    # point also loads it. Once registered under one name, block the other: then either way of
    # loading works, installed or not.
    if plugin is not sys.modules.get(__name__):
        return
    name = manager.get_name(plugin)
    for other in _PLUGIN_NAMES:
        if other != name and manager.get_plugin(other) is None and not manager.is_blocked(other):
            manager.set_blocked(other)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dquic", "dquic test fixtures")
    group.addoption(
        "--dquic-seed", action="store", type=int, default=None, metavar="N",
        help=f"seed of the dquic fixtures' randomness (simulated links, relays); "
             f"default {DEFAULT_SEED} or the dquic_seed ini value",
    )
    group.addoption(
        "--dquic-timeout", action="store", type=float, default=None, metavar="SECONDS",
        help=f"timeout of blocking calls on the dquic_endpoints sockets; default {DEFAULT_TIMEOUT:g}",
    )
    parser.addini("dquic_seed", "default seed of the dquic fixtures", default=None)


def pytest_configure(config: pytest.Config) -> None:
    _base_seed(config)  # report a bad seed or timeout once, as a usage error, before collecting
    _timeout(config)
    config.addinivalue_line(
        "markers",
        "dquic_link(config=None, *, reverse=None, **settings): network impairments (any "
        "dquic.testing.LinkConfig field: loss, delay, jitter, reorder, duplicate, bandwidth, ...) "
        "for the dquic_pair simulator link, and (loss, delay, jitter, reorder, reorder_delay, "
        "duplicate only) for dquic_relay / dquic_endpoints",
    )
    config.addinivalue_line(
        "markers",
        "dquic_endpoints(**options): DQUIC(...) options for both dquic_endpoints sockets; "
        "client_options= / server_options= dicts apply to one side only",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"dquic: seed={_base_seed(config)} (--dquic-seed)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    notes = item.stash.get(_NOTES, None)
    if notes is None:
        return
    lines = []
    for note in notes:
        try:
            lines.append(note())
        except Exception as exc:  # a report must never fail because of a note
            lines.append(f"(note unavailable: {exc!r})")
    report.sections.append(("dquic", "\n".join(lines)))


# --------------------------------------------------------------------------------------------
# helpers


def _base_seed(config: pytest.Config) -> int:
    seed = config.getoption("dquic_seed", None)
    if seed is not None:
        return int(seed)
    ini = config.getini("dquic_seed")
    if ini not in (None, "", []):
        try:
            return int(str(ini), 0)
        except ValueError:
            raise pytest.UsageError(f"dquic_seed ini value must be an integer, got {ini!r}") from None
    return DEFAULT_SEED


def _timeout(config: pytest.Config) -> float:
    value = config.getoption("dquic_timeout", None)
    if value is None:
        return DEFAULT_TIMEOUT
    if not value > 0:
        raise pytest.UsageError("--dquic-timeout must be > 0")
    return float(value)


def _note(node: pytest.Item, note: Callable[[], str]) -> None:
    """Record a line for the failure report of ``node`` (the ``dquic`` report section)."""
    notes = node.stash.get(_NOTES, None)
    if notes is None:
        notes = node.stash[_NOTES] = []
    notes.append(note)


def _require(module: str, fixture: str) -> Any:
    """Import ``module`` or fail the test with a message saying which fixture needed it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(
            f"the {fixture} fixture needs {module}, which could not be imported ({exc}); "
            f"is dquic installed with its compiled extensions and up to date?",
            pytrace=False,
        )


def _config_fields(cfg: Any) -> Dict[str, Any]:
    # not dataclasses.asdict: nested dataclasses (GilbertElliott) must stay objects
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def link_settings(node: pytest.Item) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """The ``dquic_link`` marker settings of ``node`` as ``(forward, reverse)`` keyword dicts.

    ``forward`` is None when the test has no ``dquic_link`` marker. Markers closer to the test
    override farther ones field by field (a module's ``pytestmark`` sets defaults the function's
    marker refines). ``reverse`` (server to client) is None when the marker gives none: the
    same settings apply both ways.
    """
    markers = list(node.iter_markers("dquic_link"))
    if not markers:
        return None, None
    forward: Dict[str, Any] = {}
    reverse: Optional[Dict[str, Any]] = None
    for marker in reversed(markers):  # farthest first, closest last
        if len(marker.args) > 1:
            raise pytest.UsageError("dquic_link takes at most one positional argument (a LinkConfig)")
        if marker.args:
            forward.update(_config_fields(marker.args[0]))
        kwargs = dict(marker.kwargs)
        rev = kwargs.pop("reverse", None)
        forward.update(kwargs)
        if rev is not None:
            reverse = _config_fields(rev) if dataclasses.is_dataclass(rev) else dict(rev)
    return forward, reverse


def _link_config(settings: Dict[str, Any]) -> Any:
    from dquic.testing import LinkConfig

    try:
        return LinkConfig(**settings)
    except TypeError as exc:
        raise pytest.UsageError(f"bad dquic_link setting: {exc}") from None


def _relay_kwargs(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Map link settings onto ``LossyRelay`` arguments; refuse what a relay cannot emulate."""
    from dquic.testing import LinkConfig

    defaults = _config_fields(LinkConfig())
    unsupported = sorted(k for k, v in settings.items()
                         if k not in RELAY_FIELDS and (k not in defaults or v != defaults[k]))
    if unsupported:
        raise pytest.UsageError(
            f"the UDP relay cannot emulate dquic_link setting(s) {', '.join(unsupported)}; "
            f"it supports {', '.join(RELAY_FIELDS)}")
    return {k: v for k, v in settings.items() if k in RELAY_FIELDS}


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def dquic_seed(request: pytest.FixtureRequest) -> int:
    """The seed the dquic fixtures draw their randomness from.

    ``--dquic-seed=N`` on the command line, else the ``dquic_seed`` ini value, else
    :data:`DEFAULT_SEED`: the same seed replays the same simulated run. A failing test that used
    a dquic fixture prints its seed in the ``dquic`` report section. Use it to seed your own
    random choices too (``random.Random(dquic_seed)``).
    """
    seed = _base_seed(request.config)
    _note(request.node, lambda: f"seed: {seed} (replay with --dquic-seed={seed})")
    return seed


@pytest.fixture
def dquic_network(request: pytest.FixtureRequest, dquic_seed: int) -> Any:
    """A fresh simulated network (:class:`dquic.testing.Network`) seeded with ``dquic_seed``.

    Add sans-IO nodes with ``add_node(node, addr)``, configure links with ``link(a, b, config)``
    (see ``dquic_link``), then drive it with ``run(until=..., max_time=...)``. Links not
    configured explicitly use the test's ``dquic_link`` marker settings when it has one. Every
    node is detached after the test.
    """
    sim = _require("dquic.testing.sim", "dquic_network")
    forward, _ = link_settings(request.node)
    default_link = _link_config(forward) if forward is not None else None
    net = sim.Network(seed=dquic_seed, default_link=default_link)
    yield net
    for addr in list(net.addresses):
        net.remove_node(addr)


@pytest.fixture
def dquic_link(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A factory of :class:`dquic.testing.LinkConfig`: ``dquic_link(loss=0.05, delay=0.02)``.

    Keyword arguments are ``LinkConfig`` fields (``delay``, ``jitter``, ``bandwidth``,
    ``queue_limit``, ``loss``, ``gilbert_elliott``, ``reorder``, ``reorder_delay``,
    ``duplicate``, ``corrupt``, ``mtu``, ``blackholes``, ...). Fields not given come from the
    test's ``@pytest.mark.dquic_link(...)`` marker if any, else the ``LinkConfig`` defaults; an
    unknown field is a usage error. Pass the result to ``dquic_network.link(a, b, config)``.
    """
    _require("dquic.testing.sim", "dquic_link")
    forward, _ = link_settings(request.node)
    base = dict(forward or {})

    def make(**settings: Any) -> Any:
        merged = dict(base)
        merged.update(settings)
        return _link_config(merged)

    return make


class DquicPair(NamedTuple):
    """What ``dquic_pair`` yields; unpacks as ``network, client, server, connection``."""

    #: the simulated network (``dquic.testing.Network``)
    network: Any
    #: the client's ``dquic.testing.apps.EndpointNode`` (collects what the client receives)
    client: Any
    #: the server's ``EndpointNode`` (``server.stream_messages(sid)``, ``server.count(sid)``)
    server: Any
    #: the client's ``dquic.connection.CoreConnection``, already connecting to the server
    connection: Any

    def run(self, until: Optional[Callable[[], bool]] = None, max_time: float = 60.0) -> float:
        """Run the simulation until ``until()`` is true, for at most ``max_time`` more virtual
        seconds (``dquic.testing.SimulationTimeout`` beyond). Returns the virtual time."""
        return self.network.run(until=until, max_time=self.network.now + max_time)

    def establish(self, max_time: float = 30.0) -> float:
        """Run until the client's handshake completed and the server has the connection."""
        conn, server = self.connection, self.server
        return self.run(lambda: conn.is_established and bool(server.handshakes()), max_time)

    def deliver(self, stream_id: int, messages: List[bytes], max_time: float = 600.0) -> List[bytes]:
        """Send ``messages`` from the client on ``stream_id``, run until the server has received
        as many messages on that stream as it had before plus ``len(messages)``, and return the
        messages the server received on that stream so far (in arrival order)."""
        before = self.server.count(stream_id)
        for message in messages:
            self.connection.send_message(stream_id, message)
        target = before + len(messages)
        self.run(lambda: self.server.count(stream_id) >= target, max_time)
        return self.server.stream_messages(stream_id)


@pytest.fixture
def dquic_pair(request: pytest.FixtureRequest, dquic_seed: int) -> Iterator[DquicPair]:
    """A simulated dquic client and server (``dquic.testing.apps.make_pair``), seeded.

    The link between them has the test's ``@pytest.mark.dquic_link(...)`` settings (with
    ``reverse=`` for the server-to-client direction), or the simulator's default link. Yields a
    :class:`DquicPair` ``(network, client, server, connection)``: the client is already
    connecting; send with ``connection.send_message(stream_id, data)`` and drive time with
    ``pair.run(until=...)`` / ``pair.deliver(stream_id, messages)``. Encrypted, with a test
    server identity. The simulation is discarded after the test.
    """
    apps = _require("dquic.testing.apps", "dquic_pair")
    forward, reverse = link_settings(request.node)
    link = _link_config(forward) if forward is not None else None
    rev = _link_config(reverse) if reverse is not None else None
    net, client, server, conn = apps.make_pair(link=link, reverse=rev, seed=dquic_seed)
    pair = DquicPair(net, client, server, conn)
    _note(request.node, lambda: f"simulated time reached: {net.now:.6f} s")
    yield pair
    for addr in list(net.addresses):
        net.remove_node(addr)


@pytest.fixture
def dquic_relay(request: pytest.FixtureRequest, dquic_seed: int) -> Iterator[Callable[..., Any]]:
    """A factory of started in-process lossy UDP relays (``dquic.testing.relay.LossyRelay``).

    ``relay = dquic_relay(server_address, loss=0.05, reorder=0.05)`` listens on a loopback
    port (``relay.address``): send there instead of to ``server_address`` and each datagram,
    both ways, may be dropped, duplicated, delayed or reordered. Settings not given come from
    the test's ``dquic_link`` marker (``loss``, ``duplicate``, ``reorder``, ``delay``,
    ``jitter``, ``reorder_delay``); other ``LossyRelay`` arguments (``direction``,
    ``max_queue``, ...) may be passed too. Decisions are drawn from ``dquic_seed`` (the n-th relay
    of a test uses ``dquic_seed + n``). ``relay.counters`` says what happened; every relay is
    stopped after the test.
    """
    relay_mod = _require("dquic.testing.relay", "dquic_relay")
    forward, _ = link_settings(request.node)
    base = _relay_kwargs(forward or {})
    relays: List[Any] = []

    def make(server_address: Tuple, **settings: Any) -> Any:
        kwargs = dict(base)
        kwargs.update(settings)
        kwargs.setdefault("seed", dquic_seed + len(relays))
        relay = relay_mod.LossyRelay(server_address, **kwargs)
        relays.append(relay)
        relay.start()
        index = len(relays)
        _note(request.node, lambda: f"relay {index} to {server_address}: {relay.counters!r}")
        return relay

    yield make
    for relay in reversed(relays):
        relay.stop()


class DquicEndpoints(NamedTuple):
    """What ``dquic_endpoints`` yields; unpacks as ``client, server, address``."""

    #: the client ``dquic.DQUIC`` (bound to 127.0.0.1, port chosen by the system)
    client: Any
    #: the server ``dquic.DQUIC`` (bound to 127.0.0.1, port chosen by the system)
    server: Any
    #: where the client sends: the server's address, or the relay's when there is one
    address: Tuple
    #: the ``LossyRelay`` between them (tests with a ``dquic_link`` marker), else None
    relay: Any = None


@pytest.fixture
def dquic_endpoints(request: pytest.FixtureRequest, dquic_seed: int) -> Iterator[DquicEndpoints]:
    """A client and a server ``dquic.DQUIC`` endpoint over real UDP sockets on 127.0.0.1.

    Yields :class:`DquicEndpoints` ``(client, server, address)``: the server is bound to
    ``127.0.0.1:0``; ``client.send_to(address, {stream_id: data})`` connects (handshake) and
    sends, ``server.receive_from(max_bytes)`` returns ``(client_address, {stream_id: data})``
    and the server answers with ``server.send_to(client_address, ...)``. With a
    ``@pytest.mark.dquic_link(loss=..., ...)`` marker the client talks to the server through a
    seeded lossy relay (``endpoints.relay``; ``address`` is the relay's). Both sockets get
    ``settimeout(--dquic-timeout)`` so a lost message fails the test instead of hanging it.
    ``@pytest.mark.dquic_endpoints(**options)`` passes ``DQUIC(...)`` options to both sides
    (``client_options=`` / ``server_options=`` dicts to one). Both endpoints are closed after the
    test (the client first), with a short ``linger`` unless one was given.
    """
    sync = _require("dquic.sync", "dquic_endpoints")
    timeout = _timeout(request.config)
    common: Dict[str, Any] = {"linger": min(2.0, timeout)}
    client_opts: Dict[str, Any] = {}
    server_opts: Dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("dquic_endpoints"))):
        kwargs = dict(marker.kwargs)
        client_opts.update(kwargs.pop("client_options", None) or {})
        server_opts.update(kwargs.pop("server_options", None) or {})
        common.update(kwargs)
    opened: List[Any] = []
    relay = None
    try:
        server = sync.DQUIC(**{**common, **server_opts})
        opened.append(server)
        server.bind(("127.0.0.1", 0))
        client = sync.DQUIC(**{**common, **client_opts})
        opened.append(client)
        client.bind(("127.0.0.1", 0))
        for endpoint in (server, client):
            endpoint.settimeout(timeout)
        address = tuple(server.local_address[:2])
        forward, _ = link_settings(request.node)
        if forward is not None:
            relay_mod = _require("dquic.testing.relay", "dquic_endpoints")
            relay = relay_mod.LossyRelay(address, seed=dquic_seed, **_relay_kwargs(forward))
            relay.start()
            address = tuple(relay.address[:2])
            _note(request.node, lambda: f"relay to the server: {relay.counters!r}")
        _note(request.node, lambda: f"client {client!r}, server {server!r}")
        yield DquicEndpoints(client, server, address, relay)
    finally:
        errors = []
        for endpoint in reversed(opened):  # client first: its close reaches a live server
            try:
                endpoint.close()
            except Exception as exc:
                errors.append(exc)
        if relay is not None:
            relay.stop()
        if errors:
            raise errors[0]
