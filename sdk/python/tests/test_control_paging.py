"""The control mixins' defences against a control service that misbehaves
(a page cursor that does not advance, a listing that predates pages, an
audit page that moves on without records, replies of another shape):
answers the real cc-control never gives, so they are scripted here. The
real service's answers are tested in the stack tests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from commandcontrol.control import ControlMixin, ControlReplyError
from commandcontrol.control_types import ZERO_TIME, parse_time
from commandcontrol.sessions import SessionsMixin, session_query


class Scripted(ControlMixin, SessionsMixin):
    """Answers each control request with the next scripted reply for its
    op, and records the requests."""

    def __init__(self, replies: dict[str, list[Any]]) -> None:
        self.replies = replies
        self.sent: list[tuple[str, Any]] = []
        self.key = "UKEY"

    async def request_control(self, op: str, body: object | None) -> bytes:
        self.sent.append((op, body))
        r = self.replies[op].pop(0)
        return r if isinstance(r, bytes) else json.dumps(r).encode()


def _m(id: str) -> dict[str, Any]:
    return {"id": id, "key": "U" + id, "added_at": "2031-01-02T03:04:05Z", "online": True}


@pytest.mark.asyncio
async def test_machines_follow_pages() -> None:
    wb = Scripted({"machines.list": [
        {"machines": [_m("a"), _m("b")], "total": 3, "next": "b"},
        {"machines": [_m("c")], "total": 3},
    ]})
    got = await wb.machines()
    assert [m.id for m in got] == ["a", "b", "c"]
    assert [b for _, b in wb.sent] == [{}, {"after": "b"}]


@pytest.mark.asyncio
async def test_page_size_is_sent() -> None:
    wb = Scripted({"operators.list": [{"operators": [], "total": 0}]})
    assert await wb.operators(page_size=50) == []
    assert wb.sent == [("operators.list", {"limit": 50})]
    with pytest.raises(ValueError, match="page_size"):
        await wb.operators(page_size=-1)


@pytest.mark.asyncio
async def test_a_cursor_that_does_not_advance_is_refused() -> None:
    wb = Scripted({"machines.pending": [
        {"pending": [{"id": "x", "key": "U"}], "total": 9, "next": "x"},
        {"pending": [{"id": "x", "key": "U"}], "total": 9, "next": "x"},
    ]})
    with pytest.raises(ControlReplyError, match="must advance"):
        await wb.pending()


@pytest.mark.asyncio
async def test_a_service_before_pages_answers_at_once() -> None:
    wb = Scripted({"machines.list": [{"machines": [_m("a")]}]})
    assert [m.id for m in await wb.machines()] == ["a"]


@pytest.mark.asyncio
async def test_malformed_reply_names_the_op() -> None:
    wb = Scripted({"whoami": [b"[1]"], "machines.list": [{"machines": [{"id": 5}]}]})
    with pytest.raises(ControlReplyError, match="whoami: malformed reply"):
        await wb.whoami()
    with pytest.raises(ControlReplyError, match=r"machines.list: malformed reply: .*id"):
        await wb.machines()


@pytest.mark.asyncio
async def test_optional_replies() -> None:
    wb = Scripted({"machines.accept": [b"", {"id": "a", "key": "UA", "replaced_key": "UOLD", "closed": 2}],
                   "machines.label": [b"null"]})
    assert await wb.accept("a", "UA") is None
    ch = await wb.accept("a", "UA")
    assert ch is not None and (ch.replaced_key, ch.closed, ch.machine().id) == ("UOLD", 2, "a")
    assert await wb.label("a", {"role": "web"}, ["dc"]) is None
    assert wb.sent[-1] == ("machines.label", {"id": "a", "labels": {"role": "web"}, "remove": ["dc"]})


@pytest.mark.asyncio
async def test_bad_arguments_say_what_is_wrong() -> None:
    wb = Scripted({})
    with pytest.raises(ValueError, match="id is empty"):
        await wb.remove_machine("")
    with pytest.raises(ValueError, match="role 'root': use one of admin, viewer"):
        await wb.add_operator("bob", "UB", "root")
    with pytest.raises(ValueError, match="log 'call': use one of changes, refused, calls"):
        await wb.audit(logs=["call"])
    with pytest.raises(ValueError, match="not one string"):
        await wb.label("a", remove="dc")
    assert wb.sent == []


@pytest.mark.asyncio
async def test_audit_pages_until_no_more() -> None:
    rec = {"time": "2031-01-02T03:04:05Z", "kind": "call"}
    wb = Scripted({"audit": [
        {"records": [rec, rec], "more": True, "next": {"calls": 2}},
        {"records": [], "more": True, "next": {"calls": 5}},  # moved past records before since
        {"records": [rec], "more": False},
    ]})
    since = parse_time("2031-01-01T00:00:00Z")
    got = await wb.audit(since=since, logs=["calls"])
    assert len(got) == 3
    assert [b for _, b in wb.sent] == [
        {"since": "2031-01-01T00:00:00Z", "logs": ["calls"]},
        {"since": "2031-01-01T00:00:00Z", "logs": ["calls"], "after": {"calls": 2}},
        {"since": "2031-01-01T00:00:00Z", "logs": ["calls"], "after": {"calls": 5}},
    ]


@pytest.mark.asyncio
async def test_audit_stops_at_limit_and_on_a_page_that_stands_still() -> None:
    rec = {"time": "2031-01-02T03:04:05Z", "kind": "call"}
    wb = Scripted({"audit": [{"records": [rec, rec], "more": True, "next": {"calls": 2}}]})
    assert len(await wb.audit(limit=2)) == 2
    assert wb.sent == [("audit", {"limit": 2})]
    wb = Scripted({"audit": [
        {"records": [rec], "more": True, "next": {"calls": 1}},
        {"records": [], "more": True, "next": {"calls": 1}},
    ]})
    assert len(await wb.audit()) == 1
    assert len(wb.sent) == 2


@pytest.mark.asyncio
async def test_apps_either_envelope() -> None:
    app = {"name": "shop", "functions": ["latencyCheck"], "admission": "signed",
           "added_at": "2031-01-02T03:04:05Z", "online": 3}
    wb = Scripted({"apps.list": [[app], {"apps": [app]}, b"null"]})
    assert [a.online for a in await wb.apps()] == [3]
    assert [a.name for a in await wb.apps()] == ["shop"]
    assert await wb.apps() == []


@pytest.mark.asyncio
async def test_add_app_checks_and_sends() -> None:
    wb = Scripted({"apps.add": [{"app": {"name": "shop", "functions": ["f"], "admission": "public",
                                         "added_at": "2031-01-02T03:04:05Z"}}]})
    with pytest.raises(ValueError, match="no functions"):
        await wb.add_app("shop", [])
    with pytest.raises(ValueError, match="function 'a.b'"):
        await wb.add_app("shop", ["a.b"])
    got = await wb.add_app("shop", ["f"], public=True)
    assert got.app.admission == "public" and got.seed == ""
    assert wb.sent == [("apps.add", {"name": "shop", "functions": ["f"], "public": True})]


def test_session_query() -> None:
    assert session_query({"city": "Paris"}, app="shop").to_json() == {"where": {"city": "Paris", "app": "shop"}}
    with pytest.raises(ValueError, match="unknown session attribute 'town': use one of app, admission"):
        session_query({"town": "Paris"})
    with pytest.raises(ValueError, match="disagree"):
        session_query({"app": "a"}, app="b")
    with pytest.raises(ValueError, match="limit -1"):
        session_query(None, limit=-1)
    assert ZERO_TIME.year == 1


def test_mixins_never_shadow_request_control() -> None:
    # AsyncWorkbench provides request_control; a mixin placed before its
    # base in the MRO must not hide it with a stub.
    assert "request_control" not in vars(ControlMixin)
    assert "request_control" not in vars(SessionsMixin)


def _h(seq: int, event: str, machine: str, role: str) -> dict[str, Any]:
    return {"seq": seq, "event": event, "machine": machine, "time": "2031-01-02T03:04:05Z", "labels": {"role": role}}


@pytest.mark.asyncio
async def test_history_follows_the_cursor_and_filters() -> None:
    wb = Scripted({"history": [
        {"entries": [_h(1, "joined", "a", "web"), _h(2, "joined", "b", "db")], "more": True, "cursor": 2,
         "oldest": "2031-01-01T00:00:00Z", "retention_seconds": 3600, "trimmed": True},
        {"entries": [_h(3, "left", "b", "db")], "retention_seconds": 3600},
    ]})
    h = await wb.history(since=parse_time("2031-01-01T00:00:00Z"), where="role=db")
    assert [(e.seq, e.event) for e in h.entries] == [(2, "joined"), (3, "left")]
    assert h.retention_seconds == 3600 and h.more is False
    assert [b for _, b in wb.sent] == [
        {"since": "2031-01-01T00:00:00Z", "limit": 10000},
        {"since": "2031-01-01T00:00:00Z", "limit": 10000, "cursor": 2},
    ]


@pytest.mark.asyncio
async def test_history_limit_and_bad_arguments() -> None:
    wb = Scripted({"history": [
        {"entries": [_h(9, "left", "a", "web"), _h(8, "joined", "a", "web")], "more": True, "cursor": 8,
         "retention_seconds": 60},
    ]})
    h = await wb.history(newest=True, limit=2)
    assert [e.seq for e in h.entries] == [9, 8] and h.more is True
    assert wb.sent == [("history", {"newest": True, "limit": 2})]
    for kw, msg in [({"limit": -1}, "limit"), ({"machine": "a b"}, "machine id"),
                    ({"since": parse_time("2031-01-02T00:00:00Z"), "until": parse_time("2031-01-01T00:00:00Z")}, "until")]:
        with pytest.raises(ValueError, match=msg):
            await wb.history(**kw)
