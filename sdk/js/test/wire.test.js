// The pure parts of the library against the shared wire vectors
// (fleet/testdata/wire): what the Go side builds and parses, this library
// must build and parse the same way.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import * as cc from "../dist/index.js";
import { wireVectors } from "./vectors.js";

const subjects = wireVectors("subjects.json");
const headers = wireVectors("headers.json");
const te = new TextEncoder();

test("session ids match the vectors", () => {
  const { ids } = subjects.sessions;
  assert.ok(ids.length > 0);
  for (const c of ids) {
    assert.equal(cc.sessionId(c.app, c.key), c.id, c.name);
    cc.validateSessionId(c.id);
  }
});

test("bad session ids are refused", () => {
  for (const id of subjects.sessions.bad_ids) {
    assert.throws(() => cc.validateSessionId(id), /session id/, JSON.stringify(id));
  }
});

test("session subjects match the vectors", () => {
  const builders = {
    SessionFnSubject: cc.sessionFnSubject,
    SessionFnWildcard: cc.sessionFnWildcard,
    MachineReplies: cc.machineReplies,
    CallReply: (caller, target, call, n) => cc.callReply(caller, target, call, Number(n)),
  };
  let n = 0;
  for (const c of subjects.sessions.build) {
    const f = builders[c.func];
    if (!f) continue; // operator-side subjects (events, caller wildcards)
    assert.equal(f(...c.args), c.want, c.name);
    n++;
  }
  assert.ok(n >= 4, `only ${n} session subject vectors were checked`);
  assert.equal(cc.SessionFnRoot, subjects.sessions.constants.SessionFnRoot);
});

test("a session call subject parses back", () => {
  const c = subjects.sessions.build.find((b) => b.func === "SessionFnSubject");
  assert.deepEqual(cc.parseSessionFnSubject(c.want), { token: c.args[0], function: c.args[1], caller: c.args[2] });
  for (const bad of [
    "sys.commandControl.fn.s+fo2dhkonpx22lul5.latencyCheck.K",
    "sys.commandControl.sfn.s+fo2dhkonpx22lul5.latencyCheck",
    "sys.commandControl.sfn.s+fo2dhkonpx22lul5..K",
    "sys.commandControl.sfn.web01.latencyCheck.K",
  ]) {
    assert.throws(() => cc.parseSessionFnSubject(bad), undefined, bad);
  }
});

test("reply subjects parse as the vectors say", () => {
  const cases = subjects.parse.filter((c) => c.func === "ParseCallReply");
  assert.ok(cases.length > 0);
  for (const c of cases) {
    if (c.error !== undefined) {
      assert.throws(() => cc.parseCallReply(c.args[0]), (e) => e.message.includes(c.error), c.name);
    } else {
      assert.deepEqual(cc.parseCallReply(c.args[0]), c.want, c.name);
    }
  }
});

test("agentReply matches the vectors", () => {
  const cases = subjects.parse.filter((c) => c.func === "AgentReply");
  assert.ok(cases.length > 0);
  for (const c of cases) {
    if (c.error !== undefined) {
      assert.throws(() => cc.agentReply(...c.args), (e) => e.message.includes(c.error), c.name);
    } else {
      assert.equal(cc.agentReply(...c.args), c.want.reply, c.name);
    }
  }
});

test("a session answers only replies in the caller's inbox naming itself", () => {
  const v = subjects.sessions.build.find((b) => b.func === "CallReply");
  const [caller, id] = v.args;
  const own = v.want;
  assert.equal(cc.sessionReply(own, caller, id), own);
  assert.equal(cc.sessionReply(`_INBOX_cc.${caller}.${id}.c1`, caller, id), `_INBOX_cc.${caller}.${id}.c1`);
  const refused = [
    [`_INBOX_cc.${caller}.@all.c1.0`, "names target"], // sessions get no broadcast
    [`_INBOX_cc.${caller}.s+lxbimj72rpp2anzb.c1.0`, "not this session"], // another session
    [`_INBOX_cc.${caller}.web01.c1.0`, "not this session"], // a machine
    [`_INBOX_cc.UOTHER.${id}.c1.0`, "not the caller's inbox"], // another caller's inbox
    [`_INBOX.${caller}.${id}.c1.0`, "not under _INBOX_cc"],
    [`_INBOX_cc.${caller}.${id}`, "want _INBOX_cc.<caller key>"],
  ];
  for (const [reply, why] of refused) {
    assert.throws(() => cc.sessionReply(reply, caller, id), (e) => e.message.includes(why), reply);
  }
});

test("checkCallId accepts only the reply subject's call token", () => {
  const reply = "_INBOX_cc.K.s+fo2dhkonpx22lul5.c1.0";
  cc.checkCallId(reply, "");
  cc.checkCallId(reply, "c1");
  assert.throws(() => cc.checkCallId(reply, "c2"), /Cc-Call header "c2" is not the call token "c1"/);
  assert.throws(() => cc.checkCallId("_INBOX.x", "c1"), /not under _INBOX_cc/);
});

test("header names and limits match the vectors", () => {
  const names = Object.fromEntries(headers.names.map((h) => [h.name, h.want]));
  assert.equal(cc.Headers.Error, names.HeaderError);
  assert.equal(cc.Headers.ErrorCode, names.HeaderErrorCode);
  assert.equal(cc.Headers.Function, names.HeaderFunction);
  assert.equal(cc.Headers.Duration, names.HeaderDuration);
  assert.equal(cc.Headers.CallID, names.HeaderCallID);
  assert.equal(cc.Headers.Args, names.HeaderArgs);
  const values = Object.fromEntries(headers.values.map((h) => [h.name, h.want]));
  assert.equal(String(cc.MaxCallIDLen), values.MaxCallIDLen);
});

test("argsDigest matches the vectors", () => {
  assert.ok(headers.args_digests.length > 0);
  for (const c of headers.args_digests) {
    assert.equal(cc.argsDigest(te.encode(c.body)), c.want, c.name);
  }
});

test("sha256 agrees with node:crypto across block boundaries", () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 70000]) {
    const b = new Uint8Array(n).map((_, i) => (i * 31 + n) & 255);
    assert.equal(Buffer.from(cc.sha256(b)).toString("hex"), createHash("sha256").update(b).digest("hex"), `${n} bytes`);
  }
});

test("the hello is a fleet.SessionHello within its bound", () => {
  const h = JSON.parse(cc.buildHello({ app: "demo", platform: "browser", userAgent: "UA/1", appVersion: "1.2" }, "T"));
  assert.deepEqual(h, { app: "demo", token: "T", platform: "browser", user_agent: "UA/1", app_version: "1.2" });
  // omitempty, as the Go type: no token, no empty fields.
  assert.deepEqual(JSON.parse(cc.buildHello({ app: "demo", platform: "device", userAgent: "" }, "")), { app: "demo", platform: "device" });
  assert.equal(cc.MaxSessionHello, 8192);
  assert.throws(() => cc.buildHello({ app: "demo" }, "x".repeat(9000)), /at most 8192 are allowed: use a shorter token/);
  // The messages vector of SessionHello has exactly these fields.
  const msg = wireVectors("messages.json").find((m) => m.type === "SessionHello");
  if (msg) {
    assert.deepEqual(Object.keys(msg.json).sort(), ["app", "app_version", "platform", "token", "user_agent"]);
  }
});
