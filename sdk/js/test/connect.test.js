// connectSession refuses what it cannot use with an error that says what
// to do, before or without a broker.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:net";
import { test } from "node:test";
import { WebSocket } from "ws";

import { connectSession, memoryStorage } from "../dist/index.js";

test("Node.js 20 without a WebSocket is told how to give one", async () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    await assert.rejects(connectSession({ servers: "ws://127.0.0.1:1", app: "demo" }), /no WebSocket.*globalThis\.WebSocket = WebSocket/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("bad options are named", async () => {
  globalThis.WebSocket ??= WebSocket;
  await assert.rejects(connectSession({ servers: "ws://127.0.0.1:1" }), /give the app to join/);
  await assert.rejects(connectSession({ servers: "nats://127.0.0.1:4222", app: "demo" }), /WebSocket URLs \(ws:\/\/host:port or wss:\/\/host\)/);
  await assert.rejects(connectSession({ servers: [], app: "demo" }), /WebSocket URLs/);
});

test("a failing token function fails the join, naming it", async () => {
  globalThis.WebSocket ??= WebSocket;
  const token = async () => {
    throw new Error("backend says no");
  };
  await assert.rejects(connectSession({ servers: "ws://127.0.0.1:1", app: "shop", token }), /cannot join app "shop": the token function failed: backend says no/);
  await assert.rejects(connectSession({ servers: "ws://127.0.0.1:1", app: "shop", token: async () => "" }), /returned "", not a session token/);
});

test("the token function is told the key and id it is for; the key is kept", async () => {
  globalThis.WebSocket ??= WebSocket;
  const storage = memoryStorage();
  const asked = [];
  const token = (req) => {
    asked.push(req);
    throw new Error("stop here");
  };
  await assert.rejects(connectSession({ servers: "ws://127.0.0.1:1", app: "shop", token, seedStorage: storage }));
  await assert.rejects(connectSession({ servers: "ws://127.0.0.1:1", app: "shop", token, seedStorage: storage }));
  assert.equal(asked.length, 2);
  assert.match(asked[0].publicKey, /^U[A-Z2-7]{55}$/);
  assert.match(asked[0].id, /^s\+[a-z2-7]{16}$/);
  assert.deepEqual(asked[1], asked[0], "the same storage gives the same key and id");
  assert.match(await storage.getItem("commandcontrol.session.shop"), /^SU/);
});

test("nobody listening: the error names the URL and what to check", async () => {
  globalThis.WebSocket ??= WebSocket;
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const url = `ws://127.0.0.1:${srv.address().port}`;
  srv.close();
  await once(srv, "close");
  await assert.rejects(
    connectSession({ servers: url, app: "demo", connectTimeoutMs: 5000 }),
    (e) => e.message.startsWith(`cannot join app "demo" at ${url}: `) && e.message.includes("check the URL"),
  );
});
