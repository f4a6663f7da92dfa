"""The wire contract as data: every vector of fleet/testdata/wire/*.json
that a workbench builds or parses, run against commandcontrol._wire, and
every message type decoded into the SDK's dataclasses and encoded back to
the same JSON.

A vector whose Go function this SDK does not need (the agent's and the
control service's side of the wire) is named in SERVICE_SIDE; a vector of
a function in neither table fails, so a new one asks for a decision.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from commandcontrol import _wire, control_types, types
from commandcontrol.errors import CCError

WIRE = Path(__file__).resolve().parents[3] / "fleet" / "testdata" / "wire"


def _load(name: str) -> Any:
    path = WIRE / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run the tests from a checkout of the whole repository")
    return json.loads(path.read_text(encoding="utf-8"))


SUBJECTS = _load("subjects.json")
HEADERS = _load("headers.json")
MESSAGES = _load("messages.json")

# Go builder → how the SDK builds it (args are the vector's strings).
BUILDERS: dict[str, Callable[..., str]] = {
    "FnSubject": lambda id, fn, caller: _wire.fn_subject(id, fn, caller),
    "AllSubject": lambda fn, caller: _wire.all_subject(fn, caller),
    "CtlSubject": lambda key, op: _wire.ctl_subject(key, op),
    "ControlInbox": lambda key: _wire.control_inbox(key),
    "CallReply": lambda caller, target, call, n: _wire.call_reply(caller, target, call, int(n)),
    "SessionFnSubject": lambda id, fn, caller: _wire.session_fn_subject(id, fn, caller),
}

# Builders the SDK may have (P1's choice): tested when present.
OPTIONAL_BUILDERS: dict[str, str] = {
    "PresenceEventSubject": "presence_event_subject",
    "PresenceSnapshotSubject": "PRESENCE_SNAPSHOT_SUBJECT",
    "OperatorInbox": "operator_inbox",
    "CallReplies": "call_replies",
    "MachineDiscoveryInbox": "machine_discovery_inbox",
}

# Go parser → the SDK's, returning the vector's "want" object.
PARSERS: dict[str, Callable[..., dict[str, str]]] = {
    "ParseCallReply": lambda s: dict(zip(("caller", "target", "call", "copy"), _wire.parse_call_reply(s))),
    "InboxOwner": lambda s: {"owner": _wire.inbox_owner(s)},
}

# What the agent and the control service build and check; a workbench
# neither sends on these subjects nor parses them.
SERVICE_SIDE = {
    "AgentHintSubject", "DirectInbox", "DiscoveryInbox", "SiteSysSubject", "SiteAuthSubject",
    "AccountConnectSubject", "ServerRequestSubject", "ParseFnSubject", "AgentReply", "CallReplyFor",
    "IsControlReply", "ParseCtlSubject", "ParseSiteSysSubject", "ParseServerEvent",
    "SessionFnWildcard", "MachineReplies", "CallerSessionCallsWildcard", "SessionEventSubject",
}


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [f"{c.get('func', '')}:{c['name']}" for c in cases]


BUILD = SUBJECTS["build"] + SUBJECTS["sessions"]["build"]
SDK_BUILD = [c for c in BUILD if c["func"] not in SERVICE_SIDE]
SDK_PARSE = [c for c in SUBJECTS["parse"] if c["func"] not in SERVICE_SIDE]


def test_every_vector_function_is_decided() -> None:
    funcs = {c["func"] for c in BUILD} | {c["func"] for c in SUBJECTS["parse"]}
    undecided = funcs - set(BUILDERS) - set(OPTIONAL_BUILDERS) - set(PARSERS) - SERVICE_SIDE
    assert not undecided, f"new wire functions in the vectors: {sorted(undecided)}: test them or list them as service side"


@pytest.mark.parametrize("case", SUBJECTS["machine_ids"], ids=[c["name"] for c in SUBJECTS["machine_ids"]])
def test_machine_token(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ValueError):
            _wire.machine_token(case["id"])
        with pytest.raises(ValueError):
            _wire.fn_subject(case["id"], "current-load", "K")
    else:
        assert _wire.machine_token(case["id"]) == case["token"]


@pytest.mark.parametrize("case", SDK_BUILD, ids=_ids(SDK_BUILD))
def test_build(case: dict[str, Any]) -> None:
    func = case["func"]
    if func in OPTIONAL_BUILDERS:
        attr = OPTIONAL_BUILDERS[func]
        if not hasattr(_wire, attr):
            pytest.skip(f"commandcontrol._wire has no {attr}")
        got = getattr(_wire, attr)
        if callable(got):
            got = got(*case["args"])
        assert got == case["want"]
    else:
        assert BUILDERS[func](*case["args"]) == case["want"]


@pytest.mark.parametrize("case", SDK_PARSE, ids=_ids(SDK_PARSE))
def test_parse(case: dict[str, Any]) -> None:
    parse = PARSERS[case["func"]]
    if "error" in case:
        with pytest.raises(ValueError):
            parse(*case["args"])
    else:
        assert parse(*case["args"]) == case["want"]


def test_parse_call_reply_round_trip() -> None:
    for target in ("web01", "10~0~0~5_web01", "@all", "s+fo2dhkonpx22lul5"):
        subject = _wire.call_reply("UKEY", target, "c1", 7)
        assert _wire.parse_call_reply(subject) == ("UKEY", target, "c1", "7")
        assert _wire.inbox_owner(subject) == "UKEY"


def test_control_inbox_is_the_operators() -> None:
    inbox = _wire.control_inbox("UKEY") + ".abc"
    assert _wire.inbox_owner(inbox) == "UKEY"
    assert _wire.parse_call_reply(inbox)[1] == "@ctl"


SESSION_IDS = SUBJECTS["sessions"]["ids"]


@pytest.mark.parametrize("case", SESSION_IDS, ids=[c["name"] for c in SESSION_IDS])
def test_session_id(case: dict[str, Any]) -> None:
    from commandcontrol.sessions import valid_session_id
    assert _wire.session_id(case["app"], case["key"]) == case["id"]
    assert valid_session_id(case["id"])


@pytest.mark.parametrize("bad", SUBJECTS["sessions"]["bad_ids"])
def test_bad_session_ids(bad: str) -> None:
    from commandcontrol.sessions import valid_session_id
    assert not valid_session_id(bad)


def test_session_constants() -> None:
    from commandcontrol import sessions
    c = SUBJECTS["sessions"]["constants"]
    assert sessions.SESSION_FN_ROOT == c["SessionFnRoot"]
    assert sessions.OP_SESSIONS_SNAPSHOT == c["OpSessionsSnapshot"]


def _upper_snake(go: str) -> str:
    out = ""
    for i, ch in enumerate(go):
        if ch.isupper() and i and (not go[i - 1].isupper() or (i + 1 < len(go) and go[i + 1].islower())):
            out += "_"
        out += ch.upper()
    return out


def test_upper_snake() -> None:
    assert _upper_snake("HeaderCallID") == "HEADER_CALL_ID"
    assert _upper_snake("MaxCallIDLen") == "MAX_CALL_ID_LEN"
    assert _upper_snake("HeaderRetryAfter") == "HEADER_RETRY_AFTER"


@pytest.mark.parametrize("case", HEADERS["names"] + HEADERS["values"],
                         ids=[c["name"] for c in HEADERS["names"] + HEADERS["values"]])
def test_header_constants(case: dict[str, Any]) -> None:
    name = _upper_snake(case["name"])
    assert hasattr(_wire, name), f"commandcontrol._wire has no {name} (fleet.{case['name']})"
    assert str(getattr(_wire, name)) == case["want"]


def test_sessions_module_headers_agree() -> None:
    from commandcontrol import sessions
    assert sessions.HEADER_ERROR == _wire.HEADER_ERROR
    assert sessions.HEADER_ERROR_CODE == _wire.HEADER_ERROR_CODE
    assert sessions.HEADER_RETRY_AFTER == _wire.HEADER_RETRY_AFTER


@pytest.mark.parametrize("case", HEADERS["errors"], ids=[c["name"] for c in HEADERS["errors"]])
def test_error_headers(case: dict[str, Any]) -> None:
    from commandcontrol.sessions import _reply_error

    class Msg:
        headers = {k: v for k, v in ((_wire.HEADER_ERROR_CODE, case["code"]),
                                     (_wire.HEADER_ERROR, case["description"])) if v}
        data = b""

    for got in (_wire.error_from_headers(case["code"], case["description"]), (_reply_error(Msg()) or (None,))[0]):
        if case["want"] is None:
            assert got is None
        else:
            assert isinstance(got, CCError)
            assert (got.code, got.description) == (case["want"]["code"], case["want"]["description"])


@pytest.mark.parametrize("case", HEADERS["no_responders"], ids=[c["name"] for c in HEADERS["no_responders"]])
def test_no_responders(case: dict[str, Any]) -> None:
    from commandcontrol.sessions import _is_no_responders
    headers = {_wire.HEADER_STATUS: case["status"]} if case["status"] else {}
    data = b"x" * case["body_len"]
    assert _wire.is_no_responders(headers, data) is case["want"]

    class Msg:
        pass

    m = Msg()
    m.headers = headers  # type: ignore[attr-defined]
    m.data = data  # type: ignore[attr-defined]
    assert _is_no_responders(m) is case["want"]


@pytest.mark.parametrize("case", HEADERS["args_digests"], ids=[c["name"] for c in HEADERS["args_digests"]])
def test_args_digest(case: dict[str, Any]) -> None:
    assert _wire.args_digest(case["body"].encode()) == case["want"]


# Go type → the SDK's dataclass (P1's types.py, or control_types.py).
TYPE_NAMES = {"Error": "ErrorBody"}


def _sdk_type(go: str) -> Any:
    name = TYPE_NAMES.get(go, go)
    for mod in (types, control_types):
        cls = getattr(mod, name, None)
        if cls is not None:
            return cls
    pytest.fail(f"no dataclass for fleet.{go}: add {name} to commandcontrol.types or control_types")


def _decode(cls: Any, obj: Any) -> Any:
    if "strict" in inspect.signature(cls.from_json).parameters:
        return cls.from_json(obj, strict=True)
    return cls.from_json(obj)


@pytest.mark.parametrize("case", MESSAGES, ids=[f"{c['type']}:{c['name']}" for c in MESSAGES])
def test_message_round_trip(case: dict[str, Any]) -> None:
    cls = _sdk_type(case["type"])
    v = _decode(cls, case["json"])
    assert isinstance(v, cls)
    assert v.to_json() == case["json"]
    # And through the bytes a reply carries.
    again = _decode(cls, json.loads(json.dumps(v.to_json())))
    assert again == v


def test_unknown_fields_refused_when_strict_ignored_otherwise() -> None:
    obj = {"operator": "alice", "role": "admin", "key": "UKEY", "extra": 1}
    with pytest.raises(ValueError, match="extra"):
        control_types.WhoAmI.from_json(obj, strict=True)
    assert control_types.WhoAmI.from_json(obj) == control_types.WhoAmI("alice", "admin", "UKEY")


@pytest.mark.parametrize("bad", [
    ({"id": 5, "key": "U"}, "Machine.id"),
    ({"id": "x", "key": "U", "added_at": "yesterday"}, "added_at"),
    ({"id": "x", "key": "U", "labels": ["a"]}, "labels"),
    ({"id": "x", "key": "U", "online": "yes"}, "online"),
])
def test_bad_message_fields_named(bad: tuple[dict[str, Any], str]) -> None:
    obj, field = bad
    with pytest.raises(ValueError, match=field):
        control_types.Machine.from_json(obj)


def test_times_keep_go_precision() -> None:
    t = control_types.parse_time("2031-01-02T03:04:05.123456789Z")
    assert control_types.format_time(t) == "2031-01-02T03:04:05.123456Z"
    assert control_types.format_time(control_types.parse_time("2031-01-02T05:04:05+02:00")) == "2031-01-02T03:04:05Z"
    with pytest.raises(ValueError, match="time zone"):
        control_types.parse_time("2031-01-02T03:04:05")


# The JSON names and omitempty of the Go structs, read from fleet/*.go: a
# round trip of a message with every field set cannot tell whether a zero
# field is left out, so the dataclasses' tags are compared with Go's.
FLEET = WIRE.parents[1]
_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.S | re.M)
_FIELD = re.compile(r"^\t(\w+)\s+([^\s`]+)?\s*(?:`json:\"([^\"]*)\"`)?", re.M)


def _go_structs() -> dict[str, list[tuple[str, str, bool]]]:
    """Go type → [(embedded type or "", json name, omitted when zero)]."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for path in sorted(FLEET.glob("*.go")):
        if path.name.endswith("_test.go"):
            continue
        for m in _STRUCT.finditer(path.read_text(encoding="utf-8")):
            fields = []
            for line in m.group(2).splitlines():
                if not line.startswith("\t") or line.strip().startswith("//") or not line.strip():
                    continue
                parts = line.split()
                tag = re.search(r'`json:"([^"]*)"`', line)
                if tag is None:
                    if len(parts) == 1:  # embedded
                        fields.append((parts[0], "", False))
                    continue
                name, _, opts = tag.group(1).partition(",")
                if name == "-":
                    continue
                fields.append(("", name, "omitempty" in opts or "omitzero" in opts))
            out[m.group(1)] = fields
    return out


GO_STRUCTS = _go_structs()


def _go_fields(go: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for embedded, name, omit in GO_STRUCTS[go]:
        if embedded:
            out.update(_go_fields(embedded))
        else:
            out[name] = omit
    return out


def _py_fields(cls: Any) -> dict[str, bool]:
    return {f.metadata.get("json") or f.name: bool(f.metadata.get("omit")) for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("go", sorted({c["type"] for c in MESSAGES}))
def test_dataclass_tags_match_go(go: str) -> None:
    cls = _sdk_type(go)
    if not hasattr(cls, "__dataclass_fields__") or not all(
            "json" in f.metadata for f in dataclasses.fields(cls)):
        pytest.skip(f"{cls.__name__} does not use the control_types field tags")
    assert go in GO_STRUCTS, f"no struct {go} in {FLEET}"
    assert _py_fields(cls) == _go_fields(go)


def test_zero_values_encode_as_go() -> None:
    # What Go's encoding/json writes for each zero value.
    assert control_types.ListRequest().to_json() == {}
    assert control_types.AuditRequest().to_json() == {}
    assert control_types.SessionQuery().to_json() == {}
    assert control_types.ListPage().to_json() == {"total": 0}
    assert control_types.WhoAmI().to_json() == {"operator": "", "role": "", "key": ""}
    assert control_types.Operator().to_json() == {"name": "", "key": "", "role": "",
                                                  "added_at": "0001-01-01T00:00:00Z"}
