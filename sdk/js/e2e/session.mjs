// A Node.js session for the end-to-end tests (e2e/sessions_sdk_test.go):
// joins an app, exposes latencyCheck and reports what happens as JSON
// lines on stdout; it leaves when its stdin closes.
//
//   node e2e/session.mjs --server ws://127.0.0.1:PORT --app demo
//        [--app-seed SA… [--token-time UNIX] [--token-delay-ms N]] [--call-timeout-ms N]
//        [--test-functions] [--max-concurrent N] [--try-expose NAME]
//        [--local-address 127.0.0.x] [--seed SU…]
//        [--max-reconnect-delay-ms N] [--superseded-max-delay-ms N]
//
// --app-seed gives the session a token function, as a signed app's
// backend would: each call (one per connection) signs a fresh token with
// the app's seed, bound to the session's key, issued at --token-time
// (default now) for 10 minutes, numbered in its claims (fetch=1, 2, …),
// after --token-delay-ms.
//
// --test-functions also exposes echo (its arguments as sent), fail
// (throws: a CallError with --arg code, else an Error; mode=fn returns a
// function, which is no JSON) and big (a result of --arg bytes).
// --try-expose exposes one more function and reports whether the broker
// let it ("exposed" or "refused").
//
// --local-address dials the broker from that local address (ws's
// localAddress option), so that sessions on one machine come from
// different loopback addresses, which the control service's sites map
// places in different cities.
//
// --seed gives the session that key, as a storage holding it would (two
// processes given one seed are two tabs sharing localStorage).
//
// --max-reconnect-delay-ms and --superseded-max-delay-ms set the
// session's maxReconnectDelayMs and supersededMaxDelayMs (small caps keep
// the reconnect tests short).
import { parseArgs } from "node:util";
import { WebSocket } from "ws";

import { CallError, connectSession, latencyCheck, memoryStorage, signSessionToken } from "../dist/index.js";


const { values: flags } = parseArgs({
  options: {
    server: { type: "string" },
    app: { type: "string", default: "demo" },
    "app-seed": { type: "string" },
    "token-time": { type: "string" },
    "token-delay-ms": { type: "string", default: "0" },
    "call-timeout-ms": { type: "string" },
    "test-functions": { type: "boolean", default: false },
    "max-concurrent": { type: "string" },
    "try-expose": { type: "string" },
    "local-address": { type: "string" },
    seed: { type: "string" },
    "max-reconnect-delay-ms": { type: "string" },
    "superseded-max-delay-ms": { type: "string" },
  },
});

// Node.js 20 has no global WebSocket: the library uses ws's (dialing
// from --local-address when given).
const localAddress = flags["local-address"];
globalThis.WebSocket = localAddress
  ? class extends WebSocket {
      constructor(url, protocols, options) {
        super(url, protocols, { ...options, localAddress });
      }
    }
  : WebSocket;
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

let tokens = 0;
const fetchToken = async ({ app, publicKey }) => {
  await new Promise((r) => setTimeout(r, Number(flags["token-delay-ms"])));
  const iat = flags["token-time"] ? Number(flags["token-time"]) : Math.floor(Date.now() / 1000);
  const claims = { app, sub: "e2e-user", iat, exp: iat + 600, nkey: publicKey, claims: { fetch: String(++tokens) } };
  return signSessionToken(claims, flags["app-seed"]);
};
let seedStorage;
if (flags.seed) {
  seedStorage = memoryStorage();
  seedStorage.setItem(`commandcontrol.session.${flags.app}`, flags.seed);
}
try {
  const s = await connectSession({
    seedStorage,
    servers: flags.server,
    app: flags.app,
    appVersion: "e2e-1",
    token: flags["app-seed"] ? fetchToken : undefined,
    callTimeoutMs: flags["call-timeout-ms"] ? Number(flags["call-timeout-ms"]) : undefined,
    maxConcurrent: flags["max-concurrent"] ? Number(flags["max-concurrent"]) : undefined,
    maxReconnectDelayMs: flags["max-reconnect-delay-ms"] ? Number(flags["max-reconnect-delay-ms"]) : undefined,
    supersededMaxDelayMs: flags["superseded-max-delay-ms"] ? Number(flags["superseded-max-delay-ms"]) : undefined,
    onStatus: (st) => out({ event: "status", type: st.type, error: st.error?.message }),
    onCall: (c) => out({ event: "call", ...c }),
  });
  await s.expose("latencyCheck", latencyCheck);
  if (flags["test-functions"]) {
    await s.expose("echo", (args) => args);
    await s.expose("fail", (args) => {
      if (args.mode === "fn") return () => 1;
      if (args.code) throw new CallError(Number(args.code), "nothing here");
      throw new Error("boom");
    });
    await s.expose("big", (args) => "x".repeat(Number(args.bytes)));
  }
  if (flags["try-expose"]) {
    try {
      await s.expose(flags["try-expose"], () => "hello");
      out({ event: "exposed", name: flags["try-expose"] });
    } catch (e) {
      out({ event: "refused", name: flags["try-expose"], error: e.message });
    }
  }
  out({ event: "joined", id: s.id, key: s.publicKey });
  process.stdin.resume();
  process.stdin.on("end", async () => {
    await s.close();
    process.exit(0);
  });
} catch (e) {
  out({ event: "failed", error: e.message });
  process.exit(1);
}
