#!/usr/bin/env node
// A commandcontrol workbench in Node.js with the official nats client
// (npm "nats", v2). It lists the ONLINE servers, calls a function on a
// selection of them and prints those whose result is above a threshold:
//
//   node workbench.js --server nats://127.0.0.1:4222 --key cc-data/admin.nk \
//     --where role=web --fn current-load --field load1 --threshold 10
//
// Everything it does is the documented protocol (docs/DEPLOY.md): connect
// with the operator's nkey, use the inbox prefix _INBOX_cc.<public key>,
// request sys.commandControl.presence.snapshot, then call each selected
// machine on sys.commandControl.fn.<machine token>.<function>.<public key>
// with the reply subject _INBOX_cc.<public key>.<machine token>.<call>.0,
// where the token is the machine id with every "." replaced by "~". The
// broker lets only that machine answer there, so the subject says who
// answered.
"use strict";

const fs = require("node:fs");
const { connect, nkeyAuthenticator, nkeys, createInbox, JSONCodec } = require("nats");

const jc = JSONCodec();

function parseArgs(argv) {
  const o = {
    server: process.env.CC_SERVER || "nats://127.0.0.1:4222",
    key: process.env.CC_KEY || "cc-data/admin.nk",
    where: "",
    fn: "current-load",
    field: "load1",
    threshold: 10,
    timeout: 5000,
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const val = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case "--server": o.server = val(); break;
      case "--key": o.key = val(); break;
      case "--where": o.where = val(); break;
      case "--fn": o.fn = val(); break;
      case "--field": o.field = val(); break;
      case "--threshold": o.threshold = Number(val()); break;
      case "--timeout-ms": o.timeout = Number(val()); break;
      default:
        throw new Error(`unknown flag ${argv[i]} (flags: --server --key --where --fn --field --threshold --timeout-ms)`);
    }
  }
  if (Number.isNaN(o.threshold)) throw new Error("--threshold must be a number");
  return o;
}

// "role=web,location=New-Jersey": every k=v must match the machine's
// labels, or its id for the key "machine".
function selector(where) {
  const terms = where.split(",").map((s) => s.trim()).filter(Boolean).map((t) => {
    const i = t.indexOf("=");
    if (i <= 0) throw new Error(`selector term ${t}: want key=value`);
    return [t.slice(0, i), t.slice(i + 1)];
  });
  return (srv) => terms.every(([k, v]) => (k === "machine" ? srv.machine : (srv.labels || {})[k]) === v);
}

const machineToken = (id) => id.replaceAll(".", "~");

// The snapshot comes in parts ({part, parts}) when the fleet is large.
async function snapshot(nc, inboxPrefix, timeout) {
  const inbox = createInbox(inboxPrefix);
  const sub = nc.subscribe(inbox, { timeout });
  nc.publish("sys.commandControl.presence.snapshot", undefined, { reply: inbox });
  const servers = [];
  for await (const m of sub) {
    const part = jc.decode(m.data);
    servers.push(...(part.servers || []));
    if (!part.parts || part.part >= part.parts) break;
  }
  sub.unsubscribe();
  return servers;
}

async function call(nc, publicKey, machine, fn, timeout) {
  const token = machineToken(machine);
  const call = createInbox("x").slice(2); // a fresh NUID
  const reply = `_INBOX_cc.${publicKey}.${token}.${call}.0`;
  const sub = nc.subscribe(reply, { max: 1, timeout });
  nc.publish(`sys.commandControl.fn.${token}.${fn}.${publicKey}`, jc.encode({}), { reply });
  try {
    for await (const m of sub) {
      if (m.headers && m.headers.code === 503 && m.data.length === 0) {
        return { machine, status: "no-response", error: "no agent is listening (offline?)" };
      }
      const code = m.headers && m.headers.get("Nats-Service-Error-Code");
      if (code) return { machine, status: "error", code: Number(code), error: m.headers.get("Nats-Service-Error") };
      return { machine, status: "ok", result: jc.decode(m.data) };
    }
    return { machine, status: "no-response", error: "no reply" };
  } catch (err) {
    return { machine, status: "no-response", error: String(err.message || err) };
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const seed = new TextEncoder().encode(fs.readFileSync(o.key, "utf8").trim());
  const publicKey = nkeys.fromSeed(seed).getPublicKey();
  // Control and snapshot answers come only under the control inbox.
  const inboxPrefix = `_INBOX_cc.${publicKey}.@ctl`;
  const nc = await connect({
    servers: o.server.split(","),
    authenticator: nkeyAuthenticator(seed),
    inboxPrefix,
    name: "node-workbench",
  });
  try {
    const online = await snapshot(nc, inboxPrefix, o.timeout);
    console.log(`online: ${online.length} server(s)`);
    for (const s of online) console.log(`  ${s.machine} ${JSON.stringify(s.labels || {})}`);

    const selected = online.filter(selector(o.where));
    console.log(`selected (${o.where || "all"}): ${selected.map((s) => s.machine).join(" ") || "none"}`);
    const results = await Promise.all(selected.map((s) => call(nc, publicKey, s.machine, o.fn, o.timeout)));

    let failed = 0;
    for (const r of results) {
      if (r.status !== "ok") {
        failed++;
        console.log(`  ${r.machine}: ${r.status}${r.code ? " " + r.code : ""} ${r.error}`);
      }
    }
    const above = results.filter((r) => r.status === "ok" && typeof r.result[o.field] === "number" && r.result[o.field] > o.threshold);
    console.log(`${o.fn}: ${results.length - failed} ok, ${failed} failed; ${o.field} > ${o.threshold} on ${above.length}:`);
    for (const r of above) console.log(`ABOVE ${r.machine} ${o.field}=${r.result[o.field]}`);
    process.exitCode = failed ? 1 : 0;
  } finally {
    await nc.close();
  }
}

main().catch((err) => {
  console.error(`workbench: ${err.message || err}`);
  process.exit(2);
});
