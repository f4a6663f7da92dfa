// A Node.js session for the end-to-end tests (e2e/sessions_sdk_test.go):
// joins an app, exposes latencyCheck and reports what happens as JSON
// lines on stdout; it leaves when its stdin closes.
//
//   node e2e/session.mjs --server ws://127.0.0.1:PORT --app demo
//        [--token-fn [--token-delay-ms N]] [--call-timeout-ms N]
//
// --token-fn gives the session a token function answering "tok-1-…",
// "tok-2-…", … (one per connection), each after N ms, as a signed app's
// backend would.
import { parseArgs } from "node:util";
import { WebSocket } from "ws";

import { connectSession, latencyCheck } from "../dist/index.js";

// Node.js 20 has no global WebSocket: the library uses ws's.
globalThis.WebSocket = WebSocket;

const { values: flags } = parseArgs({
  options: {
    server: { type: "string" },
    app: { type: "string", default: "demo" },
    "token-fn": { type: "boolean", default: false },
    "token-delay-ms": { type: "string", default: "0" },
    "call-timeout-ms": { type: "string" },
  },
});
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

let tokens = 0;
const fetchToken = async ({ publicKey }) => {
  await new Promise((r) => setTimeout(r, Number(flags["token-delay-ms"])));
  return `tok-${++tokens}-${publicKey.slice(0, 8)}`;
};
try {
  const s = await connectSession({
    servers: flags.server,
    app: flags.app,
    appVersion: "e2e-1",
    token: flags["token-fn"] ? fetchToken : undefined,
    callTimeoutMs: flags["call-timeout-ms"] ? Number(flags["call-timeout-ms"]) : undefined,
    onStatus: (st) => out({ event: "status", type: st.type, error: st.error?.message }),
    onCall: (c) => out({ event: "call", ...c }),
  });
  await s.expose("latencyCheck", latencyCheck);
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
