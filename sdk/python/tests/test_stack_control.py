"""The control API against the real stack (machines, pending, accept,
operators, audit), a viewer's 403s, a cc-swarm fleet, and the synchronous
facade."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from commandcontrol import CCError, Workbench
from conftest import Agent, Stack


async def poll(what: str, probe: Any, deadline: float = 30.0) -> Any:
    """Awaits probe() until it returns something true; returns it."""
    end = time.monotonic() + deadline
    while True:
        v = await probe()
        if v:
            return v
        if time.monotonic() > end:
            pytest.fail(f"waited {deadline:.0f}s for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_whoami(stack: Stack, wb: Any, viewer_wb: Any) -> None:
    w = await wb.whoami()
    assert (w.operator, w.role, w.key) == ("admin", "admin", wb.key)
    v = await viewer_wb.whoami()
    assert (v.operator, v.role, v.key) == ("viewer1", "viewer", viewer_wb.key)


@pytest.mark.asyncio
async def test_machines_add_label_ls_rm(stack: Stack, agents: list[Agent], wb: Any) -> None:
    _, pub = stack.new_key("m-added")
    mid = "10.3.0.1_added"
    await wb.add_machine(mid, key=pub, labels={"role": "web", "env": "test"})
    by_id = {m.id: m for m in await wb.machines()}
    assert by_id[mid].key == pub and by_id[mid].labels == {"role": "web", "env": "test"}
    assert by_id[mid].online is False

    await wb.label(mid, {"env": "prod"}, remove=["role"])
    by_id = {m.id: m for m in await wb.machines()}
    assert by_id[mid].labels == {"env": "prod"}

    # an agent that is ONLINE is listed as such
    a = stack.agent("10.3.0.2_listed", {"role": "db"})
    agents.append(a)
    by_id = {m.id: m for m in await wb.machines()}
    assert by_id[a.id].online is True

    await wb.remove_machine(mid)
    assert mid not in {m.id for m in await wb.machines()}
    with pytest.raises(CCError) as e:
        await wb.remove_machine(mid)
    assert e.value.code == 404


@pytest.mark.asyncio
async def test_pending_then_accept(stack: Stack, agents: list[Agent], wb: Any) -> None:
    """An agent that is not registered tries to connect and is refused; it
    shows in pending with the key it presented; accepting that key lets it
    in (ONLINE)."""
    a = stack.agent("10.3.1.1_newcomer", register=False, start=False)
    agents.append(a)
    stack.start_agent(a, wait=False)

    async def pending_entry() -> Any:
        return next((p for p in await wb.pending() if p.id == a.id), None)

    p = await poll("the agent in pending", pending_entry)
    _, pub = stack.new_key("agent-" + a.id)  # the same seed file: its public key
    assert p.key == pub
    await wb.accept(a.id, key=pub)

    async def online() -> bool:
        return a.id in {s.machine for s in await wb.servers()}

    await poll("the accepted agent ONLINE", online)
    assert a.id not in {q.id for q in await wb.pending()}


@pytest.mark.asyncio
async def test_operators(stack: Stack, wb: Any) -> None:
    _, pub = stack.new_key("op-carol")
    await wb.add_operator("carol", key=pub, role="viewer")
    ops = {o.name: o for o in await wb.operators()}
    assert ops["carol"].role == "viewer" and ops["carol"].key == pub
    assert ops["admin"].role == "admin"
    await wb.remove_operator("carol")
    assert "carol" not in {o.name for o in await wb.operators()}


@pytest.mark.asyncio
async def test_audit(stack: Stack, wb: Any) -> None:
    """Registry changes are in the audit log, oldest first, with who made
    them; limit bounds the records returned."""
    tag = uuid.uuid4().hex[:6]
    added = []
    for i in range(5):
        _, pub = stack.new_key(f"audit-{tag}-{i}")
        mid = f"10.3.2.{i + 1}_audit{tag}"
        await wb.add_machine(mid, key=pub)
        added.append(mid)

    records = await wb.audit()
    adds = [r for r in records if r.op == "machines.add" and (r.request or {}).get("id") in added]
    assert [r.request["id"] for r in adds] == added
    assert {r.operator for r in adds} == {"admin"}
    assert all(r.kind == "registry" for r in adds)
    seqs = [r.seq for r in records if r.log == "changes"]
    assert seqs == sorted(seqs)

    some = await wb.audit(limit=3)
    assert len(some) == 3
    assert [r.seq for r in some] == [r.seq for r in records[:3]]


@pytest.mark.asyncio
async def test_viewer_control_is_forbidden(stack: Stack, viewer_wb: Any) -> None:
    """A viewer may list, but every change (and the audit) is a 403."""
    assert isinstance(await viewer_wb.machines(), list)
    assert isinstance(await viewer_wb.pending(), list)
    _, pub = stack.new_key("viewer-try")
    attempts = [
        viewer_wb.add_machine("10.3.3.1_nope", key=pub),
        viewer_wb.accept("10.3.3.1_nope", key=pub),
        viewer_wb.remove_machine("10.3.3.1_nope"),
        viewer_wb.label("10.3.3.1_nope", {"a": "b"}),
        viewer_wb.add_operator("mallory", key=pub, role="admin"),
        viewer_wb.remove_operator("admin"),
        viewer_wb.audit(),
    ]
    for coro in attempts:
        with pytest.raises(CCError) as e:
            await coro
        assert e.value.code == 403, e.value


@pytest.mark.asyncio
async def test_swarm_fleet(stack: Stack, wb: Any) -> None:
    """A cc-swarm fleet (simulated agents that registered themselves):
    listed with a selector, and a call reaches every one."""
    n = 60
    stack.swarm(n, "pyt", labels={"tier": "sim"})
    servers = await wb.servers(where="swarm=pyt,tier=sim")
    assert len(servers) == n
    res = await wb.call("current-load", where={"swarm": "pyt"}, timeout=20)
    assert len(res.expected) == n
    assert len(res.ok) == n, res.summary
    assert not res.timed_out


def test_sync_facade(stack: Stack, agents: list[Agent]) -> None:
    """Workbench: the same methods without async, as a context manager."""
    a = stack.agent("10.3.4.1_sync", {"role": "sync"})
    agents.append(a)
    with Workbench.connect(stack.url, key_file=str(stack.admin_key)) as wb:
        assert wb.whoami().role == "admin"
        assert [s.machine for s in wb.servers(where={"role": "sync"})] == [a.id]
        res = wb.call("machine-info", where="role=sync", timeout=10)
        assert [r.machine for r in res.ok] == [a.id]
        assert res.ok[0].result["machine_id"] == a.id
        assert a.id in {m.id for m in wb.machines()}


@pytest.mark.asyncio
async def test_lists_are_paged(stack: Stack, wb: Any) -> None:
    """machines, pending and operators follow the service's pages: with a
    page of 2 (or 1) entries the whole list comes back, the same as in one
    page."""
    tag = uuid.uuid4().hex[:6]
    for i in range(7):
        _, pub = stack.new_key(f"paged-{tag}-{i}")
        await wb.add_machine(f"10.3.5.{i + 1}_paged{tag}", key=pub)
    for i in range(3):
        _, pub = stack.new_key(f"paged-op-{tag}-{i}")
        await wb.add_operator(f"paged{tag}{i}", key=pub, role="viewer")

    whole = [m.id for m in await wb.machines()]
    assert len(whole) >= 7 and whole == sorted(whole)
    assert [m.id for m in await wb.machines(page_size=2)] == whole
    ops = [o.name for o in await wb.operators()]
    assert len(ops) >= 4
    assert [o.name for o in await wb.operators(page_size=1)] == ops
    assert [p.id for p in await wb.pending(page_size=1)] == [p.id for p in await wb.pending()]


# A CA certificate whose key was thrown away when it was made: it only has
# to load; the broker below never offers TLS.
_UNUSED_CA = """-----BEGIN CERTIFICATE-----
MIIBeTCCASugAwIBAgIUVErwxyClzgIuIh3a3zBqykIzFcIwBQYDK2VwMDExLzAt
BgNVBAMMJmNvbW1hbmRjb250cm9sIHRlc3QgQ0EgKGtleSBkaXNjYXJkZWQpMCAX
DTI2MTIwMjA1NTQxMFoYDzIxMjYxMTA4MDU1NDEwWjAxMS8wLQYDVQQDDCZjb21t
YW5kY29udHJvbCB0ZXN0IENBIChrZXkgZGlzY2FyZGVkKTAqMAUGAytlcAMhAHdo
AXgBvdHNY8CSogaZb/jQDuLkSdxqtoqd+46HjUiVo1MwUTAdBgNVHQ4EFgQU5dD/
jemUNm0as47TTQel1d+XQGUwHwYDVR0jBBgwFoAU5dD/jemUNm0as47TTQel1d+X
QGUwDwYDVR0TAQH/BAUwAwEB/zAFBgMrZXADQQB3wheAFroWmtZl1TeQ3PKvSkKl
0dH3LKlYRYsXUVhpaKExmErrANthajdyFmMDKOXQ/aPVItVt/zmjP5WiLMUF
-----END CERTIFICATE-----
"""


@pytest.mark.asyncio
async def test_tls_asked_is_never_downgraded(stack: Stack, tmp_path: Any) -> None:
    """With tls_ca given, a broker that offers no TLS (here the test
    stack's plain loopback broker, standing in for a man in the middle
    that strips it) gets no login: the SDK refuses before it signs the
    broker's nonce, instead of falling back to plain text."""
    from commandcontrol import AsyncWorkbench, ConnectError

    ca = tmp_path / "ca.pem"
    ca.write_text(_UNUSED_CA)
    with pytest.raises(ConnectError, match="did not offer TLS"):
        await AsyncWorkbench.connect(stack.url, key_file=str(stack.admin_key), tls_ca=str(ca))


@pytest.mark.asyncio
async def test_history_and_seen(stack: Stack, agents: list[Agent], viewer_wb: Any) -> None:
    """A real agent joins and is SIGKILLed: a viewer's history() shows it
    joined then left with the broker's reason and its labels; machines()
    has it OFFLINE since the leave; where= selects by the labels recorded;
    newest=True reads backwards."""
    a = stack.agent("10.3.7.1_hist", {"role": "hist"})
    agents.append(a)
    by_id = {m.id: m for m in await viewer_wb.machines()}
    assert by_id[a.id].seen is not None and by_id[a.id].seen.online is True
    stack.kill_agent(a)

    async def left() -> Any:
        h = await viewer_wb.history(machine=a.id)
        return h if [e.event for e in h.entries] == ["joined", "left"] else None

    h = await poll("the agent's leave in the history", left)
    joined, gone = h.entries
    assert gone.reason and gone.time >= joined.time and gone.labels == {"role": "hist"}
    assert h.retention_seconds == 30 * 24 * 3600 and h.oldest <= joined.time and h.trimmed is False

    seen = {m.id: m for m in await viewer_wb.machines()}[a.id].seen
    assert seen is not None and seen.online is False
    assert (seen.since, seen.last_seen, seen.reason) == (gone.time, gone.time, gone.reason)

    mine = await viewer_wb.history(where="role=hist")
    assert [(e.event, e.machine) for e in mine.entries] == [("joined", a.id), ("left", a.id)]
    latest = await viewer_wb.history(where="role=hist", newest=True, limit=1)
    assert [e.event for e in latest.entries] == ["left"] and latest.more is True
    with pytest.raises(ValueError, match="machine id"):
        await viewer_wb.history(machine="web 01")
    with Workbench.connect(stack.url, key_file=str(stack.admin_key)) as sync_wb:
        assert [e.event for e in sync_wb.history(machine=a.id).entries] == ["joined", "left"]
