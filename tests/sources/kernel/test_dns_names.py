"""`fd.sip.name` and kin: domain names in conditions, resolved in the background (sources/kernel/dns_names.py)."""

from __future__ import annotations

import gc
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from agent.builtin_sources import new_engine
from agent.engine.engine import Engine, RulesText
from agent.event import Event
from sources.kernel import dns_names
from sources.kernel.dns_names import DOMAIN_NAMES, DomainNames, IpAddress, resolve_addresses
from tests.sources.kernel.state_fixtures import CONTAINER_ID, Stream, inet
from tests.support.kernel import live_kernel_source, run_script
from tests.support.rules_harness import loaded_engine

AF_INET, SOCK_STREAM = 2, 1
LOOPBACK = ipaddress.ip_address("127.0.0.1")
OTHER = "10.0.0.9"


def _ips(*texts: str) -> frozenset[IpAddress]:
    return frozenset(ipaddress.ip_address(text) for text in texts)


class FakeDns:
    """A resolver answering from a table, counting lookups; a clock the test moves."""

    def __init__(self, **answers: frozenset[IpAddress]) -> None:
        self.answers = answers
        self.lookups: list[str] = []
        self.now = 1000.0

    def resolve(self, name: str) -> frozenset[IpAddress]:
        self.lookups.append(name)
        return self.answers.get(name, frozenset())

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeDns:
    return FakeDns(**{"api.example": _ips("10.96.0.1"), "db.example": _ips("10.0.0.7", "2001:db8::7")})


@pytest.fixture
def names(fake: FakeDns) -> DomainNames:
    return DomainNames(fake.resolve, clock=fake.clock)


class TestResolver:
    def test_a_new_name_is_resolved_by_the_next_round_not_when_watched(self, fake: FakeDns, names: DomainNames) -> None:
        """Watching a name (compiling a check) does no lookup; the background round does, and the check then matches."""
        matches = names.matcher(["api.example"])
        assert fake.lookups == []
        assert not matches(ipaddress.ip_address("10.96.0.1"))
        names.refresh()
        assert fake.lookups == ["api.example"]
        assert matches(ipaddress.ip_address("10.96.0.1"))
        assert not matches(ipaddress.ip_address(OTHER))

    def test_refresh_interval_doubles_while_unchanged_and_resets_on_change(self, fake: FakeDns,
                                                                           names: DomainNames) -> None:
        """libsinsp's schedule: 10 s, doubling to 320 s while the answer is the same, 10 s again once it changes."""
        check = names.matcher(["api.example"])
        names.refresh()
        lookups_at: list[float] = []
        for _ in range(1000):
            fake.now += 1
            check(ipaddress.ip_address("10.96.0.1"))  # in use: not forgotten
            before = len(fake.lookups)
            names.refresh()
            if len(fake.lookups) > before:
                lookups_at.append(fake.now - 1000)
        gaps = [b - a for a, b in zip([0.0, *lookups_at], lookups_at, strict=False)]
        assert gaps[:6] == [11, 21, 41, 81, 161, 321]
        assert set(gaps[6:]) == {321}
        fake.answers["api.example"] = _ips("10.96.0.2")
        fake.now += 400
        names.refresh()
        assert check(ipaddress.ip_address("10.96.0.2")) and not check(ipaddress.ip_address("10.96.0.1"))
        fake.now += 11
        before = len(fake.lookups)
        names.refresh()
        assert len(fake.lookups) == before + 1

    def test_a_name_unused_for_an_hour_is_forgotten_until_used_again(self, fake: FakeDns, names: DomainNames) -> None:
        """An idle name stops being looked up and matches nothing; its next use gets it resolved again."""
        check = names.matcher(["api.example"])
        names.refresh()
        fake.now += dns_names.FORGET_AFTER_S + 1
        names.refresh()
        assert not check(ipaddress.ip_address("10.96.0.1"))  # forgotten; this use wakes it
        count = len(fake.lookups)
        names.refresh()
        assert len(fake.lookups) == count + 1
        assert check(ipaddress.ip_address("10.96.0.1"))

    def test_negated_check_waits_for_the_answer(self, fake: FakeDns, names: DomainNames) -> None:
        """`!=` is false while the name is unresolved (no answer is no match), then true for other addresses."""
        differs = names.matcher(["api.example"], negate=True)
        assert not differs(ipaddress.ip_address(OTHER))
        names.refresh()
        assert differs(ipaddress.ip_address(OTHER))
        assert not differs(ipaddress.ip_address("10.96.0.1"))

    def test_name_of_gives_the_first_watched_name_of_an_address(self, fake: FakeDns, names: DomainNames) -> None:
        """Outputs show a watched name the address resolves from (IPv4 or IPv6), the first registered one."""
        fake.answers["alias.example"] = _ips("10.0.0.7")
        keep = (names.matcher(["db.example"]), names.matcher(["alias.example"]))
        names.refresh()
        assert names.name_of(ipaddress.ip_address("10.0.0.7")) == "db.example"
        assert names.name_of(ipaddress.ip_address("2001:db8::7")) == "db.example"
        assert names.name_of(ipaddress.ip_address(OTHER)) is None
        assert len(keep) == 2

    def test_names_no_check_holds_are_dropped(self, fake: FakeDns, names: DomainNames) -> None:
        """After a rules reload drops a check, its name is no longer looked up nor shown."""
        check = names.matcher(["api.example"])
        names.refresh()
        del check
        gc.collect()
        fake.now += 1000
        names.refresh()
        assert fake.lookups == ["api.example"]
        assert names.name_of(ipaddress.ip_address("10.96.0.1")) is None

    def test_the_number_of_names_is_bounded(self, fake: FakeDns) -> None:
        """Past the bound, a new name is refused with a message saying what to do."""
        names = DomainNames(fake.resolve, clock=fake.clock, max_names=2)
        keep = names.matcher(["a.example", "b.example"])
        with pytest.raises(ValueError, match="more than 2 distinct domain names"):
            names.matcher(["c.example"])
        assert keep is not None

    def test_resolve_addresses_reads_the_system_resolver(self) -> None:
        """localhost resolves (from /etc/hosts) to the loopback address; a name that cannot exist to nothing."""
        assert LOOPBACK in resolve_addresses("localhost")
        assert resolve_addresses("no-such-name.invalid") == frozenset()

    def test_the_thread_resolves_soon_after_a_name_is_watched_and_stops(self, fake: FakeDns) -> None:
        """start() runs rounds in a daemon thread, woken by a new name; stop() ends it."""
        names = DomainNames(fake.resolve)
        names.start()
        try:
            check = names.matcher(["api.example"])
            assert _eventually(lambda: check(ipaddress.ip_address("10.96.0.1")), timeout_s=0.5)
        finally:
            names.stop()
        assert not any(t.name == "dns-names" and t.is_alive() for t in threading.enumerate())


# ----- through the engine, on kernel-style events ----------------------------------------------------------------
def _engine(condition: str, output: str = "sip=%fd.sip.name cip=%fd.cip.name") -> Engine:
    engine = new_engine()
    rules = f"- rule: named\n  desc: d\n  condition: {condition}\n  output: {output}\n  priority: WARNING\n"
    result = engine.load_rules([RulesText("named.yaml", rules)])
    assert not result.errors, [p.as_text() for p in result.errors]
    return engine


def _connect(s: Stream, server: str, *, tid: int = 200, fd: int = 3) -> Event:
    s.record("socket", tid, res=fd, domain=AF_INET, type=SOCK_STREAM, proto=0)
    return s.record("connect", tid, fd=fd, addr=inet(server, 443), local_addr=inet("10.0.0.5", 51000))


def _accept(s: Stream, client: str) -> Event:
    s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
    s.record("bind", 200, fd=3, addr=inet("10.0.0.5", 8080))
    s.record("listen", 200, fd=3, backlog=5)
    return s.record("accept4", 200, res=4, listen_fd=3, addr=inet(client, 40100), flags=0)


def _eventually(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    """The process-wide DOMAIN_NAMES answering from a table (rounds run by the test, no thread)."""
    fake = FakeDns(**{"localhost": _ips("127.0.0.1", "::1"), "api.example": _ips("10.96.0.1")})
    monkeypatch.setattr(DOMAIN_NAMES, "resolve", fake.resolve)
    yield fake


class TestConditions:
    def test_equals_fires_once_the_name_resolved_and_only_for_its_addresses(self, dns: FakeDns) -> None:
        """`fd.sip.name = localhost`: no alert before resolution, then one for 127.0.0.1 and none for another IP."""
        engine = _engine("evt.type=connect and fd.sip.name = localhost")
        s = Stream()
        assert engine.process(_connect(s, "127.0.0.1")) == []
        DOMAIN_NAMES.refresh()
        alerts = engine.process(_connect(s, "127.0.0.1", fd=4))
        assert [a.output for a in alerts] == ["sip=localhost cip=<NA>"]
        assert engine.process(_connect(s, OTHER, fd=5)) == []

    def test_in_list_and_negation(self, dns: FakeDns) -> None:
        """`in (...)` matches any listed name's addresses; `!=` matches other resolved addresses."""
        listed = _engine("evt.type=connect and fd.sip.name in (api.example, localhost)")
        negated = _engine("evt.type=connect and fd.sip.name != api.example")
        DOMAIN_NAMES.refresh()
        s = Stream()
        to_api, to_other = _connect(s, "10.96.0.1"), _connect(s, OTHER, fd=4)
        assert [len(listed.process(e)) for e in (to_api, to_other)] == [1, 0]
        assert [len(negated.process(e)) for e in (to_api, to_other)] == [0, 1]

    def test_client_local_and_remote_ends(self, dns: FakeDns) -> None:
        """On an accepted connection from 127.0.0.1, cip and rip are localhost, sip and lip are not."""
        fields = ("fd.cip.name", "fd.rip.name", "fd.sip.name", "fd.lip.name")
        engines = {name: _engine(f"evt.type=accept4 and {name} = localhost") for name in fields}
        DOMAIN_NAMES.refresh()
        event = _accept(Stream(), "127.0.0.1")
        assert {name: len(engine.process(event)) for name, engine in engines.items()} == {
            "fd.cip.name": 1, "fd.rip.name": 1, "fd.sip.name": 0, "fd.lip.name": 0}

    def test_other_string_operators_compare_the_shown_name(self, dns: FakeDns) -> None:
        """As libsinsp, operators other than =, != and in compare the name outputs show (a watched name)."""
        watched = _engine("evt.type=connect and fd.sip.name = localhost")
        suffix = _engine("evt.type=connect and fd.sip.name endswith host and fd.sip.name exists")
        DOMAIN_NAMES.refresh()
        s = Stream()
        assert len(suffix.process(_connect(s, "127.0.0.1"))) == 1
        assert suffix.process(_connect(s, OTHER, fd=4)) == []
        assert watched is not None

    def test_the_event_path_never_looks_a_name_up(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With the real resolver thread, the rule fires for the machine's own hostname, and every getaddrinfo call
        came from the resolver thread, none from the thread evaluating events."""
        hostname = socket.gethostname()
        addresses = resolve_addresses(hostname)
        if not addresses:
            pytest.skip(f"this machine's hostname {hostname!r} does not resolve")
        callers: list[str] = []
        real = socket.getaddrinfo

        def counting(*args: Any, **kwargs: Any) -> Any:
            callers.append(threading.current_thread().name)
            return real(*args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", counting)
        engine = _engine(f"evt.type=connect and fd.sip.name = '{hostname}'")
        s = Stream()
        server = str(min(addresses, key=lambda a: a.version))
        DOMAIN_NAMES.start()
        try:
            fired: list[Alert] = []
            fds = iter(range(3, 1000))

            def connect_fires() -> bool:
                fired.extend(engine.process(_connect(s, server, fd=next(fds))))
                return bool(fired)

            assert _eventually(connect_fires)
        finally:
            DOMAIN_NAMES.stop()
        assert callers and set(callers) == {"dns-names"}
        # The output shows a watched name of that address: the hostname, or one an earlier test watched.
        assert ipaddress.ip_address(server) in resolve_addresses(fired[0].output_fields["fd.sip.name"])

    def test_too_many_names_is_a_load_error_naming_the_condition(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past the bound, the rule does not load: the error says how many names are allowed."""
        monkeypatch.setattr(DOMAIN_NAMES, "_max_names", 0)
        engine = new_engine()
        rules = ("- rule: many\n  desc: d\n  condition: evt.type=connect and fd.sip.name in (a.example)\n"
                 "  output: x\n  priority: WARNING\n")
        result = engine.load_rules([RulesText("many.yaml", rules)])
        assert any("more than 0 distinct domain names" in p.as_text() for p in result.errors)


def test_upstream_contact_k8s_api_server_rule_fires(reference: Path, dns: FakeDns) -> None:
    """The stable rule "Contact K8S API Server From Container" fires on a container's connect to the API server's
    address once kubernetes.default.svc.cluster.local resolved, and not on a connect elsewhere."""
    dns.answers["kubernetes.default.svc.cluster.local"] = _ips("10.96.0.1")
    engine = loaded_engine(reference / "rules" / "falco_rules.yaml")
    DOMAIN_NAMES.refresh()
    s = Stream()
    s.state.learn_container(s.host.containers[CONTAINER_ID])
    rule = "Contact K8S API Server From Container"
    to_api = [a.rule for a in engine.process(_connect(s, "10.96.0.1", tid=300))]
    elsewhere = [a.rule for a in engine.process(_connect(s, OTHER, tid=300, fd=4))]
    assert rule in to_api and rule not in elsewhere


@pytest.mark.root
@pytest.mark.bpf
def test_live_connect_to_localhost_fires_with_the_name_in_the_output() -> None:
    """eBPF capture: a child connecting to 127.0.0.1 fires `fd.sip.name = localhost`, the output naming it; the
    resolver thread runs with the kernel source and stops with it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    engine = _engine(f"evt.type=connect and fd.sip.name = localhost and fd.sport = {port}",
                     output="sip=%fd.sip.name port=%fd.sport")
    try:
        with live_kernel_source(engine) as log:
            assert _eventually(lambda: DOMAIN_NAMES.name_of(LOOPBACK) is not None), "localhost never resolved"
            run_script(f"{sys.executable} -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}))'")
            alert = log.wait_for(lambda a: a.rule == "named", timeout_s=5.0)
    finally:
        listener.close()
    assert alert is not None and alert.output == f"sip=localhost port={port}"
    assert not any(t.name == "dns-names" and t.is_alive() for t in threading.enumerate())
