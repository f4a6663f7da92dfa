"""Quick unit tests of the wire helpers, the selector and the call engine's
collector (no broker: tests/test_wire.py reads the Go vectors, the
test_stack_* files run the real stack)."""

from __future__ import annotations

import re
from typing import Optional

import pytest

from commandcontrol import _wire as w
from commandcontrol.client import _CallState
from commandcontrol.errors import CCError, Forbidden, NotFound, TooManyRequests
from commandcontrol.selector import Selector
from commandcontrol.types import Reply, parse_time

KEY = "UCNHZLBT2ICQQFTMDADNUBKGNA65MDWKOFPXEKSLJUJS3RRUW7IAEZZS"


def test_subjects() -> None:
    assert w.fn_subject("10.0.0.5_web01", "current-load", KEY) == f"sys.commandControl.fn.10~0~0~5_web01.current-load.{KEY}"
    assert w.all_subject("f", KEY) == f"sys.commandControl.all.f.{KEY}"
    assert w.ctl_subject(KEY, "whoami") == f"sys.commandControl.ctl.{KEY}.whoami"
    assert w.control_inbox(KEY) == f"_INBOX_cc.{KEY}.@ctl"
    assert w.call_reply(KEY, "@all", "abc", 0) == f"_INBOX_cc.{KEY}.@all.abc.0"
    assert w.call_replies(KEY, "abc") == f"_INBOX_cc.{KEY}.*.abc.>"


def test_parse_call_reply() -> None:
    r = w.parse_call_reply(f"_INBOX_cc.{KEY}.10~0~0~5_a.abc.2")
    assert r == w.ReplySubject(KEY, "10~0~0~5_a", "abc", "2")
    assert w.parse_call_reply("_INBOX_cc.k.t.c") == w.ReplySubject("k", "t", "c", "")
    assert w.parse_call_reply("_INBOX_cc.k.t.c.1.2").copy == "1.2"
    for bad in ["", "_INBOX.k.t.c", "_INBOX_cc.k.t", "_INBOX_cc.k..c", "_INBOX_cc.k.t.c.", "_INBOX_cc..t.c"]:
        with pytest.raises(ValueError):
            w.parse_call_reply(bad)
    assert w.reply_target(f"_INBOX_cc.{KEY}.tok.abc.0") == "tok"
    assert w.inbox_owner(f"_INBOX_cc.{KEY}.@ctl.x") == KEY
    with pytest.raises(ValueError):
        w.inbox_owner("_INBOX.x")


def test_agent_reply() -> None:
    assert w.agent_reply("_INBOX_cc.k.@all.c.1", "k", "m") == "_INBOX_cc.k.m.c.1"
    assert w.agent_reply("_INBOX_cc.k.m.c", "k", "m") == "_INBOX_cc.k.m.c"
    with pytest.raises(ValueError):
        w.agent_reply("_INBOX_cc.other.@all.c", "k", "m")
    with pytest.raises(ValueError):
        w.agent_reply("_INBOX_cc.k.n.c", "k", "m")


def test_ids() -> None:
    assert w.machine_from_token("10~0~0~5_web01") == "10.0.0.5_web01"
    for bad in ["", "a" * 129, "a b", "é", "a*b", "a/b"]:
        with pytest.raises(ValueError):
            w.validate_machine_id(bad)
    w.validate_name("function name", "current-load")
    with pytest.raises(ValueError, match="function name"):
        w.validate_name("function name", "a.b")


def test_machine_token_refuses_bad_ids() -> None:
    with pytest.raises(ValueError, match="position"):
        w.machine_token("a*b")
    with pytest.raises(ValueError):
        w.fn_subject("@all", "f", KEY)


def test_session_id_shape() -> None:
    sid = w.session_id("demo", "UKEY")
    assert w.is_session_id(sid) and len(sid) == 18
    assert not w.is_session_id("s+ABCDEFGHIJKLMNOP")


def test_args_digest() -> None:
    # sha256("{}") = 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
    assert w.args_digest(b"{}") == "44136fa355b3678a1146ad16f7e8649e:2"


def test_error_headers() -> None:
    assert w.error_from_headers(None) is None
    assert w.error_from_headers({}) is None
    e = w.error_from_headers({w.HEADER_ERROR_CODE: "404", w.HEADER_ERROR: "no such function"})
    assert isinstance(e, NotFound) and e.code == 404 and e.description == "no such function"
    assert isinstance(w.error_from_headers({w.HEADER_ERROR_CODE: "403", w.HEADER_ERROR: "x"}), Forbidden)
    e = w.error_from_headers({w.HEADER_ERROR_CODE: "x", w.HEADER_ERROR: "boom"})
    assert e is not None and e.code == 500
    e = w.error_from_headers({w.HEADER_ERROR_CODE: "429", w.HEADER_ERROR: "slow down", w.HEADER_RETRY_AFTER: "150"})
    assert isinstance(e, TooManyRequests) and e.retry_after_ms == 150
    e = w.error_from_headers("404", "no such function")  # the two header values
    assert isinstance(e, NotFound) and e.description == "no such function"
    assert w.error_from_headers("", "") is None
    assert w.is_no_responders({"Status": "503"}, 0)
    assert w.is_no_responders({"Status": "503"}, b"")
    assert not w.is_no_responders({"Status": "503"}, 3)


@pytest.mark.parametrize("sel,machine,labels,want", [
    ("", "10.0.0.1_a", {}, True),
    ("role=web", "10.0.0.1_a", {"role": "web"}, True),
    ("role=web", "10.0.0.1_a", {"role": "db"}, False),
    ("role!=web", "10.0.0.1_a", {}, True),
    ("env=", "10.0.0.1_a", {}, True),
    ("env=", "10.0.0.1_a", {"env": "prod"}, False),
    ("hostname=web*", "10.0.0.1_web01", {}, True),
    ("hostname=web*,env!=staging", "10.0.0.1_web01", {"env": "staging"}, False),
    ("ip=10.0.0.?", "10.0.0.1_x", {}, True),
    ("machine=10.0.0.[1-3]_*", "10.0.0.4_x", {}, False),
    ("machine=10.0.0.[^1-3]_*", "10.0.0.4_x", {}, True),
    ("role=a*", "x_y", {"role": "a/b"}, False),  # * never matches "/" (path.Match)
    (" role = web ", "x_y", {"role": "web"}, True),
    ("location=New-Brunswick,role=web", "x_y", {"role": "web", "location": "New-Brunswick"}, True),
])
def test_selector_match(sel: str, machine: str, labels: dict[str, str], want: bool) -> None:
    assert Selector(sel).match(machine, labels) is want


@pytest.mark.parametrize("sel,err", [
    ("role", "want key=value"),
    ("role=web,", "empty term"),
    ("=web", "key before"),
    ("ro le=web", "may not contain"),
    ("role=[a", "bad pattern"),
    ("x" * 5000, "at most 4096"),
])
def test_selector_errors(sel: str, err: str) -> None:
    with pytest.raises(ValueError, match=err):
        Selector(sel)


def test_selector_string() -> None:
    assert str(Selector(" role = web , env!=prod ")) == "role=web,env!=prod"


class _Msg:
    def __init__(self, subject: str, data: bytes = b"", headers: Optional[dict[str, str]] = None) -> None:
        self.subject, self.data, self.headers = subject, data, headers


def _state(targets: list[str]) -> tuple[_CallState, list[Reply]]:
    got: list[Reply] = []
    return _CallState("f", targets, got.append, None), got


def _reply(tok: str, data: bytes = b"{}", headers: Optional[dict[str, str]] = None, copy: int = 0) -> _Msg:
    h = {w.HEADER_FUNCTION: "f"}
    h.update(headers or {})
    return _Msg(w.call_reply(KEY, tok, "cid", copy), data, h)


def test_collector_counts_and_ends() -> None:
    cl, got = _state(["10.0.0.1_a", "10.0.0.2_b"])
    cl.handle(_reply("10~0~0~1_a", b'{"x": 1}'))  # type: ignore[arg-type]
    assert not cl.done.is_set()
    cl.handle(_reply("10~0~0~1_a"))  # type: ignore[arg-type]  # duplicate
    cl.handle(_reply("10~0~0~9_z"))  # type: ignore[arg-type]  # unexpected
    cl.handle(_reply("10~0~0~2_b", b"", {w.HEADER_ERROR_CODE: "500", w.HEADER_ERROR: "boom"}))  # type: ignore[arg-type]
    assert cl.done.is_set()
    res = cl.finish()
    assert (res.num_ok, res.num_error, res.num_unexpected, res.duplicates) == (1, 1, 1, 1)
    assert got[0].result == {"x": 1} and got[0].machine == "10.0.0.1_a"
    assert got[1].unexpected and got[1].machine == "10.0.0.9_z"
    assert isinstance(got[2].error, CCError) and got[2].error.code == 500
    assert res.no_response == []


def test_collector_ignores_other_functions_and_bad_json() -> None:
    cl, got = _state(["m1"])
    cl.handle(_Msg(w.call_reply(KEY, "m1", "cid", 0), b"{}", {w.HEADER_FUNCTION: "other"}))  # type: ignore[arg-type]
    cl.handle(_Msg(w.call_reply(KEY, "m1", "cid", 0), b"{}", None))  # type: ignore[arg-type]
    assert got == []
    cl.handle(_reply("m1", b"not json"))  # type: ignore[arg-type]
    assert got[0].status == "error" and got[0].error is not None and got[0].error.code == 500


def test_collector_no_responders_twice_is_final() -> None:
    cl, got = _state(["m1", "m2"])
    nr = {w.HEADER_STATUS: "503"}
    cl.handle(_Msg(w.call_reply(KEY, "m1", "cid", 0), b"", nr))  # type: ignore[arg-type]
    assert cl.remaining == 2  # the first is kept for a re-send
    cl.state[0] = 2  # re-sent (_UNREACHABLE_RESENT)
    cl.handle(_Msg(w.call_reply(KEY, "m1", "cid", 1), b"", nr))  # type: ignore[arg-type]
    assert cl.remaining == 1
    res = cl.finish()
    assert res.no_response == ["m1", "m2"]
    assert got[0].status == "no-response" and got[0].error is not None and got[0].error.code == 503
    assert got[1].error is None  # never heard of: just no answer


def test_collector_broadcast_no_responders_marks_all() -> None:
    cl, _ = _state(["m1", "m2"])
    cl.handle(_Msg(w.call_reply(KEY, "@all", "cid", 0), b"", {w.HEADER_STATUS: "503"}))  # type: ignore[arg-type]
    assert list(cl.state) == [1, 1]


def test_summary_and_time() -> None:
    cl, _ = _state(["m1"])
    cl.handle(_reply("m1"))  # type: ignore[arg-type]
    assert cl.finish().summary == "1 expected: 1 ok, 0 error, 0 no response"
    t = parse_time("2026-12-02T05:40:41.385221123Z")
    assert (t.year, t.microsecond, t.utcoffset() is not None) == (2026, 385221, True)


def test_selector_from_mapping() -> None:
    from commandcontrol.selector import as_selector
    sel = as_selector({"role": "web*", "dc": "eu-1"})
    assert sel.match("x_y", {"role": "web*", "dc": "eu-1"})
    assert not sel.match("x_y", {"role": "web1", "dc": "eu-1"})  # literal, no wildcards
    assert str(sel) == "role=web*,dc=eu-1"
    with pytest.raises(ValueError):
        as_selector({"a b": "x"})
    with pytest.raises(ValueError):
        as_selector(5)  # type: ignore[arg-type]


_FACTS = {"os": "linux", "platform": "debian", "platform_version": "12.5", "arch": "arm64", "cpus": 4,
          "memory_bytes": 8589934592}


@pytest.mark.parametrize("sel,want", [
    ("role in (web,db)", True),
    ("role in ( db , web )", True),
    ("role not in (db,cache)", True),
    ("role not in (w*)", False),
    ("platform in (debian,ubuntu)", True),
    ("platform != alpine", True),
    ("arch=arm64,platform=debian", True),
    ("cpus=4,memory=8589934592", True),
    ("container=", True),
    ("os=plan9", True),  # the label the operator set wins over the agent's fact
    ("os=linux", False),
    ("role=db or platform=debian", True),
    ("role=db;arch=arm64", True),
    ("role=db,arch=arm64 or role=web,arch=amd64", False),
    ("role=db , arch=arm64  OR  role=web , arch=arm64", True),
    ("role=web,hostname=w*or*", False),
])
def test_selector_lists_or_facts(sel: str, want: bool) -> None:
    from commandcontrol.types import Facts
    facts = Facts.from_json(_FACTS)
    assert Selector(sel).match("10.0.0.5_web01", {"role": "web", "os": "plan9"}, facts) is want


@pytest.mark.parametrize("sel,err", [
    ("role in ()", "list is empty"),
    ("role in (web", "end with one"),
    ("role in web", "want key=value"),
    ("role in (web,)", "empty value"),
    ("role=(web)", "may not contain"),
    ("role=web or ", "empty alternative"),
])
def test_selector_list_errors(sel: str, err: str) -> None:
    with pytest.raises(ValueError, match=re.escape(err)):
        Selector(sel)


def test_selector_string_lists_or() -> None:
    s = "platform not in (alpine,deb*),os=linux or role in (db)"
    assert str(Selector(s)) == s
    assert Selector(s).keys() == ["os", "platform", "role"]


def test_facts_parse_and_filter() -> None:
    from commandcontrol.types import Facts, Server
    f = Facts.from_json({**_FACTS, "boot_time": "2031-01-02T03:04:05Z"})
    assert f is not None and f.platform == "debian" and f.cpus == 4 and f.boot_time.year == 2031
    assert f.fact("memory") == "8589934592" and f.fact("container") == "" and f.fact("nope") == ""
    assert f.to_json() == {**_FACTS, "boot_time": "2031-01-02T03:04:05Z"}
    assert Facts.from_json(None) is None
    with pytest.raises(ValueError, match="cpus"):
        Facts.from_json({"cpus": "4"})
    with pytest.raises(ValueError, match="os"):
        Facts.from_json({"os": 1})
    servers = [Server.from_json({"machine": "10.0.0.1_a", "facts": _FACTS}), Server.from_json({"machine": "10.0.0.2_b"})]
    assert [s.machine for s in Selector("os=linux").filter(servers)] == ["10.0.0.1_a"]
    assert [s.machine for s in Selector("platform!=debian").filter(servers)] == ["10.0.0.2_b"]
