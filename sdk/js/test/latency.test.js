// latencyCheck against a local HTTP server: what it measures and how it
// fails.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { CallError, Codes, latencyCheck, latencyCheckOf } from "../dist/index.js";

let server;
let base;
let hits = 0;
const body = "x".repeat(1234);
const hanging = new Set();

before(async () => {
  server = createServer((req, res) => {
    if (req.url === "/hang") {
      hanging.add(res); // answered when the test ends
      return;
    }
    hits++;
    res.writeHead(req.url === "/missing" ? 404 : 200, { "Content-Type": "text/plain" });
    res.end(body);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  for (const res of hanging) res.end();
  server.closeAllConnections();
  server.close();
});

const failsWith = (code, text) => (e) => e instanceof CallError && e.code === code && e.message.includes(text);

test("it fetches count times and reports the times", async () => {
  hits = 0;
  const r = await latencyCheck({ url: base + "/ok", count: 4 });
  assert.equal(hits, 4);
  assert.deepEqual(Object.keys(r), ["url", "count", "min_ms", "median_ms", "max_ms", "status", "bytes"]);
  assert.equal(r.url, base + "/ok");
  assert.equal(r.count, 4);
  assert.equal(r.status, 200);
  assert.equal(r.bytes, body.length);
  assert.ok(r.min_ms > 0 && r.min_ms <= r.median_ms && r.median_ms <= r.max_ms, JSON.stringify(r));
});

test("three fetches by default; an HTTP error is a measurement", async () => {
  hits = 0;
  const r = await latencyCheck({ url: base + "/missing" });
  assert.equal(hits, 3);
  assert.equal(r.status, 404);
});

test("bad arguments are a 400 saying what to give", async () => {
  await assert.rejects(latencyCheck({}), failsWith(Codes.BadRequest, "give the url to fetch"));
  await assert.rejects(latencyCheck({ url: "example.com" }), failsWith(Codes.BadRequest, "is not an absolute URL"));
  await assert.rejects(latencyCheck({ url: "ftp://example.com/" }), failsWith(Codes.BadRequest, "only http: and https:"));
  await assert.rejects(latencyCheck({ url: base, count: 0 }), failsWith(Codes.BadRequest, "give 1 to 20"));
  await assert.rejects(latencyCheck({ url: base, count: 21 }), failsWith(Codes.BadRequest, "give 1 to 20"));
  await assert.rejects(latencyCheck({ url: base, timeout_ms: 0 }), failsWith(Codes.BadRequest, "timeout_ms is 0"));
});

test("a fetch past timeout_ms is a 504", async () => {
  await assert.rejects(latencyCheck({ url: base + "/hang", count: 1, timeout_ms: 50 }), failsWith(Codes.Timeout, "took more than 50 ms"));
});

test("the call's end stops the fetches", async () => {
  const ctl = new AbortController();
  const p = latencyCheck({ url: base + "/hang", count: 1 }, { signal: ctl.signal });
  ctl.abort();
  await assert.rejects(p, failsWith(Codes.Timeout, "the call's time ran out"));
});

test("a server nobody runs is a 503", async () => {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const url = `http://127.0.0.1:${s.address().port}/`;
  s.close();
  await once(s, "close");
  await assert.rejects(latencyCheck({ url, count: 1 }), failsWith(Codes.Unavailable, `fetch 1 of 1 of ${url} failed`));
});

test("it declares its arguments for the workbench's strings", () => {
  assert.deepEqual(latencyCheck.args.map((a) => `${a.name}:${a.type}${a.required ? "!" : ""}`), ["url:string!", "count:int", "timeout_ms:int"]);
});

test("latencyCheckOf fetches only its origins; others are a 403 with no fetch", async () => {
  const own = latencyCheckOf({ origins: [base] });
  hits = 0;
  const r = await own({ url: base + "/ok", count: 1 });
  assert.equal(r.status, 200);
  assert.equal(hits, 1);
  await assert.rejects(own({ url: "http://192.168.1.1/admin", count: 1 }), failsWith(Codes.Forbidden, `measures only ${base}; http://192.168.1.1 is not one of them`));
  await assert.rejects(own({ url: base.replace("127.0.0.1", "localhost") + "/ok", count: 1 }), failsWith(Codes.Forbidden, "is not one of them"));
  assert.equal(hits, 1);
  assert.deepEqual(own.args, latencyCheck.args);
  assert.throws(() => latencyCheckOf({ origins: [] }), /give the origins/);
  assert.throws(() => latencyCheckOf({ origins: ["file:///etc"] }), /is not http\(s\)/);
});

// A second server, on another port: an address the session must not be
// led to by an allowed origin's redirect (an internal host, say).
async function internalServer() {
  let hits = 0;
  const s = createServer((req, res) => {
    hits++;
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("internal secret ".repeat(64));
  });
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  return { url: `http://127.0.0.1:${s.address().port}`, hits: () => hits, close: () => { s.closeAllConnections(); s.close(); } };
}

// redirector answers every request with a 302 to to(req), counting them.
async function redirector(to) {
  let hits = 0;
  const s = createServer((req, res) => {
    hits++;
    res.writeHead(302, { Location: to(req) });
    res.end();
  });
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  return { url: `http://127.0.0.1:${s.address().port}`, hits: () => hits, close: () => { s.closeAllConnections(); s.close(); } };
}

test("latencyCheckOf does not follow a redirect to an origin not in its list", async () => {
  const internal = await internalServer();
  const open = await redirector(() => internal.url + "/admin");
  try {
    const own = latencyCheckOf({ origins: [open.url] });
    await assert.rejects(own({ url: open.url + "/go", count: 2 }),
      failsWith(Codes.Forbidden, `${open.url}/go redirects to ${internal.url}, which is not followed: this session measures only ${open.url}`));
    assert.equal(open.hits(), 1, "the allowed origin was asked once");
    assert.equal(internal.hits(), 0, "the internal server was never fetched");
  } finally {
    internal.close();
    open.close();
  }
});

test("latencyCheckOf follows redirects among its origins, at most 5", async () => {
  hits = 0;
  const hop = await redirector((req) => (req.url === "/loop" ? "/loop" : base + "/ok"));
  try {
    const own = latencyCheckOf({ origins: [hop.url, base] });
    const r = await own({ url: hop.url + "/start", count: 2 });
    assert.equal(r.url, hop.url + "/start");
    assert.equal(r.status, 200);
    assert.equal(r.bytes, body.length);
    assert.equal(r.count, 2);
    assert.equal(hits, 2, "the redirect's allowed target was fetched once per measurement");
    const before = hop.hits();
    await assert.rejects(own({ url: hop.url + "/loop", count: 1 }), failsWith(Codes.Unavailable, "redirects more than 5 times"));
    assert.equal(hop.hits() - before, 6, "the first fetch and 5 redirects, no more");
  } finally {
    hop.close();
  }
});

test("plain latencyCheck follows redirects (it fetches what the caller names)", async () => {
  hits = 0;
  const hop = await redirector(() => base + "/ok");
  try {
    const r = await latencyCheck({ url: hop.url + "/x", count: 1 });
    assert.equal(r.status, 200);
    assert.equal(hits, 1);
  } finally {
    hop.close();
  }
});

test("latencyCheckOf reports nothing a fetch that follows redirects anyway reached", async () => {
  // As a runtime whose fetch ignores redirect: "manual" (one built on
  // XMLHttpRequest) would.
  const internal = await internalServer();
  const open = await redirector(() => internal.url + "/admin");
  const saved = globalThis.fetch;
  globalThis.fetch = (url, init) => saved(url, { ...init, redirect: "follow" });
  try {
    const own = latencyCheckOf({ origins: [open.url] });
    await assert.rejects(own({ url: open.url + "/go", count: 1 }),
      failsWith(Codes.Forbidden, `${open.url}/go was redirected to ${internal.url} (this runtime's fetch follows redirects): not reported`));
  } finally {
    globalThis.fetch = saved;
    internal.close();
    open.close();
  }
});
