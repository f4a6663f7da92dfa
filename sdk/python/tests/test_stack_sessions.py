"""Sessions through the Python SDK against the real stack: an admin
registers a public app, a session (a nats-py connection with its own key
and a hello, admitted by the real callout) exposes latencyCheck, the SDK
lists it and calls it by attribute, and sees it go when it closes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable

import nats
import pytest

from commandcontrol import _wire as w
from conftest import ONLINE_DEADLINE, Stack


async def _until(what: str, cond: Callable[[], Awaitable[bool]]) -> None:
    """Polls cond (a request to the service) until it holds, or fails."""
    end = time.monotonic() + ONLINE_DEADLINE
    while not await cond():
        if time.monotonic() > end:
            pytest.fail(f"waited {ONLINE_DEADLINE:.0f}s for {what}")
        await asyncio.sleep(0.05)


async def _join(stack: Stack, app: str) -> tuple[Any, str]:
    """A session of app: its own fresh key, a hello as its auth token, and
    latencyCheck answered as the session library does (the reply subject
    the broker lets it use, Cc-Call and Cc-Args echoed)."""
    seed_file, pub = stack.new_key(f"session-{app}")
    hello = json.dumps({"app": app, "platform": "device", "user_agent": "pytest", "app_version": "1"})
    nc = await nats.connect(stack.url, nkeys_seed=str(seed_file), token=hello, name="pytest session",
                            allow_reconnect=False)
    sid = w.session_id(app, pub)

    async def answer(msg: Any) -> None:
        args = json.loads(msg.data or b"{}")
        hdr = {w.HEADER_CALL_ID: (msg.headers or {}).get(w.HEADER_CALL_ID, ""),
               w.HEADER_ARGS: w.args_digest(msg.data), w.HEADER_FUNCTION: "latencyCheck"}
        await nc.publish(msg.reply, json.dumps({"url": args.get("url"), "median_ms": 3}).encode(), headers=hdr)

    await nc.subscribe(f"sys.commandControl.sfn.{sid}.latencyCheck.*", cb=answer)
    await nc.flush()
    return nc, sid


@pytest.mark.asyncio
async def test_sessions_listed_called_and_gone(stack: Stack, wb: Any) -> None:
    await wb.add_app("pydemo", ["latencyCheck"], public=True)
    nc, sid = await _join(stack, "pydemo")
    try:
        listed: list[Any] = []

        async def online() -> bool:
            listed[:] = await wb.sessions({"app": "pydemo"})
            return [s.id for s in listed] == [sid]

        await _until("the session listed", online)
        s = listed[0]
        assert s.app == "pydemo" and s.admission == "public" and s.ip == "127.0.0.1"
        assert s.declared.platform == "device"

        res = await wb.call("latencyCheck", {"url": "https://example.test/"}, sessions={"app": "pydemo"}, timeout=10)
        assert res.num_ok == 1 and not res.timed_out, res.summary
        r = res.ok[0]
        assert r.session == sid and r.app == "pydemo" and r.result["url"] == "https://example.test/"
    finally:
        await nc.close()

    async def gone() -> bool:
        return not await wb.sessions({"app": "pydemo"})

    await _until("the closed session gone", gone)
    removed = await wb.remove_app("pydemo")
    assert removed.name == "pydemo"
