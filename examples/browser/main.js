// The browser example: join the app named in the page's address as a
// public session, expose latencyCheck, and show the session's id, state
// and calls. Bundled by esbuild into dist/app.js (see README.md).
import { connectSession, latencyCheck } from "@commandcontrol/session";

const q = new URLSearchParams(location.search);
const server = q.get("server") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname}:8443`;
const app = q.get("app") || "demo";

const $ = (id) => document.getElementById(id);
const state = (text, kind) => {
  $("state").textContent = text;
  $("state").dataset.kind = kind || "";
};
const log = (line) => {
  const el = $("log");
  el.textContent = `${new Date().toISOString().slice(11, 19)} ${line}\n` + el.textContent.slice(0, 4000);
};

let calls = 0;
$("app").textContent = app;
state("connecting");
try {
  const session = await connectSession({
    servers: server,
    app,
    appVersion: "browser-example-1",
    // The key stays in this tab: a reload keeps the session id, and each
    // tab is a session of its own. (Not localStorage: all tabs would share
    // one key, one session id, which is one connection: they would
    // supersede each other.)
    seedStorage: window.sessionStorage,
    onStatus: (s) => {
      log(`${s.type}${s.server ? " " + s.server : ""}${s.error ? ": " + s.error.message : ""}`);
      if (s.type === "disconnect" || s.type === "reconnecting") state("reconnecting", "bad");
      if (s.type === "reconnect") state("serving", "ok");
      if (s.type === "superseded") state("reconnecting slowly: another tab or device may be using this session's key, or the network keeps dropping it", "bad");
      else if (s.type === "closed") state("closed", "bad");
    },
    onCall: (c) => {
      if (!c.dropped) $("calls").textContent = String(++calls);
      log(`call ${c.function} from ${c.caller.slice(0, 8)}…: ${c.dropped ? "dropped (" + c.dropped + ")" : c.code ? c.code + " " + c.error : "ok"} ${c.ms.toFixed(1)} ms`);
    },
  });
  $("session-id").textContent = session.id;
  await session.expose("latencyCheck", latencyCheck);
  state("serving", "ok");
  window.ccSession = session; // for the console
} catch (e) {
  state(`failed: ${e.message}`, "bad");
  log(e.message);
}
