"""Listing and watching ONLINE servers against the real stack: real
cc-control, real cc-agent processes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from conftest import Agent, Stack

pytestmark = pytest.mark.asyncio


DEADLINE = 30.0


async def next_about(events: Any, machine: str) -> Any:
    """The watch's next event naming machine, within DEADLINE seconds."""
    async def find() -> Any:
        while True:
            e = await events.__anext__()
            if getattr(e, "machine", "") == machine:
                return e
    return await asyncio.wait_for(find(), DEADLINE)


def ids(servers: Any) -> set[str]:
    return {s.machine for s in servers}


async def test_servers_where(stack: Stack, agents: list[Agent], wb: Any) -> None:
    suite = uuid.uuid4().hex[:8]
    web01 = stack.agent("10.1.0.1_web01", {"role": "web", "location": "NB", "suite": suite})
    web02 = stack.agent("10.1.0.2_web02", {"role": "web", "location": "NY", "suite": suite})
    db01 = stack.agent("10.1.0.3_db01", {"role": "db", "location": "NB", "suite": suite})
    agents += [web01, web02, db01]

    assert ids(await wb.servers(where={"suite": suite})) == {web01.id, web02.id, db01.id}
    assert ids(await wb.servers(where={"role": "web", "suite": suite})) == {web01.id, web02.id}
    # the CLI's selector syntax
    assert ids(await wb.servers(where=f"role=web,location=NB,suite={suite}")) == {web01.id}
    assert ids(await wb.servers(where={"role": "nothing-has-this", "suite": suite})) == set()
    # labels come with each server
    (s,) = await wb.servers(where={"role": "db", "suite": suite})
    assert s.labels["location"] == "NB"
    # every ONLINE machine, unfiltered
    assert {web01.id, web02.id, db01.id} <= ids(await wb.servers())


async def test_watch_joined_then_left(stack: Stack, agents: list[Agent], wb: Any) -> None:
    """watch() starts with the ONLINE list, then 'synced'; a machine whose
    agent starts is 'joined', and 'left' once its process is killed."""
    a = stack.agent("10.1.1.1_watched", {"role": "watch"}, start=False)
    agents.append(a)
    events = wb.watch().__aiter__()
    try:
        while (await asyncio.wait_for(events.__anext__(), DEADLINE)).event != "synced":
            pass
        stack.start_agent(a, wait=False)
        e = await next_about(events, a.id)
        assert e.event == "joined", e
        assert e.labels.get("role") == "watch"

        assert a.proc is not None
        a.proc.kill()
        e = await next_about(events, a.id)
        assert e.event == "left", e
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def test_fleet_past_one_snapshot_part(stack: Stack, wb: Any) -> None:
    """A cc-swarm fleet larger than one presence snapshot part (2,000
    machines): servers() joins the parts, and a call to all of them gets
    every answer."""
    n = 2100
    stack.swarm(n, "big", labels={"size": "big"})
    servers = await wb.servers(where={"swarm": "big"})
    assert len(servers) == n
    assert len({s.machine for s in servers}) == n
    res = await wb.call("current-load", where="swarm=big", timeout=60)
    assert len(res.expected) == n
    assert len(res.ok) == n, res.summary
