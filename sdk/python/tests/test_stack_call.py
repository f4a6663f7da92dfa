"""Calls against the real stack: ok results, error codes, no-response from a
wedged agent, the re-send that reaches a just-reconnected agent, keep=,
a viewer's limits."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from commandcontrol import AsyncWorkbench, CCError, NoMatch
from conftest import ADMIN_FN, ECHO_FN, NO_RESPONDERS, Agent, HoldingProxy, Stack

pytestmark = pytest.mark.asyncio


def machines(replies: Any) -> list[str]:
    """The machine ids of replies (or of ids, as CallResult.no_response
    may hold), sorted."""
    return sorted(r if isinstance(r, str) else r.machine for r in replies)


def two_agents(stack: Stack, agents: list[Agent], name: str) -> tuple[str, Agent, Agent]:
    suite = uuid.uuid4().hex[:8]
    a = stack.agent(f"10.2.0.1_{name}a", {"role": "web", "suite": suite})
    b = stack.agent(f"10.2.0.2_{name}b", {"role": "web", "suite": suite})
    agents += [a, b]
    return suite, a, b


async def test_call_ok(stack: Stack, agents: list[Agent], wb: Any) -> None:
    suite, a, b = two_agents(stack, agents, "ok")
    res = await wb.call("current-load", where={"suite": suite}, timeout=10)
    assert sorted(res.expected) == sorted([a.id, b.id])
    assert machines(res.ok) == sorted([a.id, b.id]), res.summary
    assert not res.errors and not res.no_response and not res.timed_out
    for r in res.ok:
        assert r.status == "ok" and r.error is None
        assert isinstance(r.result["load1"], (int, float))
    # by name, with a typed argument of an operators' function
    res = await wb.call(ECHO_FN["name"], {"n": 7}, machines=[a.id], timeout=10)
    assert [r.result for r in res.ok] == [{"n": 7}], res.summary


async def test_call_every_machine(stack: Stack, agents: list[Agent], wb: Any) -> None:
    # No selector: the targets are the snapshot's ids alone ({"ids": true}).
    _, a, b = two_agents(stack, agents, "all")
    res = await wb.call("current-load", timeout=10)
    assert res.expected == sorted(set(res.expected)), res.expected
    assert a.id in res.expected and b.id in res.expected, res.expected
    assert {a.id, b.id} <= set(machines(res.ok)), res.summary


async def test_call_no_match(stack: Stack, agents: list[Agent], wb: Any) -> None:
    """A selection that chooses nobody raises NoMatch naming it, as Go's
    bench.ErrNoMatch; nothing was called."""
    suite, a, b = two_agents(stack, agents, "nomatch")
    with pytest.raises(NoMatch) as e:
        await wb.call("current-load", where={"suite": suite, "role": "db"}, timeout=10)
    assert "call current-load: no ONLINE machine matches " in str(e.value) and "role=db" in str(e.value), e.value
    assert e.value.result is not None and e.value.result.expected == [] and not e.value.result.replies


async def test_call_error_codes(stack: Stack, agents: list[Agent], wb: Any) -> None:
    suite, a, b = two_agents(stack, agents, "err")
    res = await wb.call("no-such-function", where={"suite": suite}, timeout=10)
    assert machines(res.errors) == sorted([a.id, b.id]), res.summary
    assert not res.ok and not res.no_response
    for r in res.errors:
        assert r.status == "error"
        assert isinstance(r.error, CCError) and r.error.code == 404, r.error
        assert "no-such-function" in r.error.description

    # an argument the function does not take, and one of the wrong type
    for fn, args in (("sw-list", {"bogus": 1}), (ECHO_FN["name"], {"n": "seven"}), (ECHO_FN["name"], {})):
        res = await wb.call(fn, args, where={"suite": suite}, timeout=10)
        assert machines(res.errors) == sorted([a.id, b.id]), (fn, args, res.summary)
        assert {r.error.code for r in res.errors} == {400}, [r.error for r in res.errors]


async def test_call_wedged_agent_is_no_response(stack: Stack, agents: list[Agent], wb: Any) -> None:
    """An agent that is connected (ONLINE) but answers nothing (SIGSTOP) is
    reported as no-response when the timeout passes; the other answers."""
    suite, a, b = two_agents(stack, agents, "wedge")
    assert b.proc is not None
    b.proc.stop()
    try:
        res = await wb.call("current-load", where={"suite": suite}, timeout=1.5)
        assert res.timed_out
        assert machines(res.ok) == [a.id], res.summary
        assert machines(res.no_response) == [b.id], res.summary
        assert [r.status for r in res.replies if r.machine == b.id] == ["no-response"]
    finally:
        b.proc.cont()


async def test_call_resend_reaches_reconnected_agent(stack: Stack, agents: list[Agent], proxy: HoldingProxy) -> None:
    """The call's first copy finds nobody serving the machine (its agent is
    down: the broker answers "no responders"). From that moment the
    client's connection is held (a proxy stops both directions, as the Go
    tests' hooks hold the reader) while the agent restarts and is ONLINE;
    then released. Only a re-send can reach the agent now, and it answers:
    one ok reply, and more than one copy was published to its subject."""
    a = stack.agent("10.2.1.1_late", {"role": "late"})
    agents.append(a)
    stack.kill_agent(a)  # registered, offline

    c = await AsyncWorkbench.connect(proxy.url, key_file=str(stack.admin_key))
    try:
        token = a.id.replace(".", "~")
        proxy.count(f"PUB sys.commandControl.fn.{token}.machine-info.{c.key} ".encode())
        proxy.hold_on(*NO_RESPONDERS)
        call = asyncio.create_task(c.call("machine-info", machines=[a.id], timeout=20))
        await asyncio.wait_for(proxy.triggered.wait(), 15)
        assert proxy.counted == 1  # the first copy, answered "no responders"
        await asyncio.to_thread(stack.start_agent, a)  # ONLINE: subscribed
        proxy.release()
        res = await asyncio.wait_for(call, 30)
        assert machines(res.ok) == [a.id], res.summary
        assert res.ok[0].result["machine_id"] == a.id
        assert proxy.counted >= 2, "no re-send was published"
    finally:
        await c.close()


async def test_call_keep(stack: Stack, agents: list[Agent], wb: Any) -> None:
    suite, a, b = two_agents(stack, agents, "keep")
    res = await wb.call("machine-info", where={"suite": suite}, timeout=10, keep=lambda r: r.machine == b.id)
    assert machines(res.ok) == [b.id], res.summary
    assert not res.no_response and not res.errors
    # keep sees each reply: a predicate on the result
    res = await wb.call("machine-info", where={"suite": suite}, timeout=10,
                        keep=lambda r: r.result["machine_id"].endswith("keepa"))
    assert machines(res.ok) == [a.id], res.summary


async def test_viewer_call_limits(stack: Stack, agents: list[Agent], viewer_wb: Any) -> None:
    """A viewer calls read-only functions; an admin-only function is refused
    by the broker: the call raises Forbidden (403)."""
    suite, a, b = two_agents(stack, agents, "view")
    res = await viewer_wb.call("current-load", where={"suite": suite}, timeout=10)
    assert machines(res.ok) == sorted([a.id, b.id]), res.summary
    res = await viewer_wb.call(ECHO_FN["name"], {"n": 1}, where={"suite": suite}, timeout=10)
    assert len(res.ok) == 2, res.summary  # role viewer in its definition
    with pytest.raises(CCError) as e:
        await viewer_wb.call(ADMIN_FN["name"], where={"suite": suite}, timeout=10)
    assert e.value.code == 403, e.value


async def test_stream(stack: Stack, agents: list[Agent], wb: Any) -> None:
    """stream() yields each reply as it comes: the answers, then the
    machines that gave none (a wedged agent) when the timeout passes."""
    suite, a, b = two_agents(stack, agents, "stream")
    got = [r async for r in wb.stream("machine-info", where={"suite": suite}, timeout=10)]
    assert sorted((r.machine, r.status) for r in got) == [(a.id, "ok"), (b.id, "ok")]
    assert b.proc is not None
    b.proc.stop()
    try:
        got = [r async for r in wb.stream("machine-info", where={"suite": suite}, timeout=1.5)]
        assert [(r.machine, r.status) for r in got] == [(a.id, "ok"), (b.id, "no-response")]
    finally:
        b.proc.cont()
