// The reconnect schedule: short connections in a row (a connection closed
// within ShortConnectionMs of being made) grow the wait; past
// SupersededAfter of them the wait grows up to supersededMaxDelayMs, never
// to a stop.
import assert from "node:assert/strict";
import { test } from "node:test";

import { reconnectBackoff, SupersededAfter, SupersededMaxDelayMs } from "../dist/index.js";

test("failed dials double the wait from 500 ms up to maxDelayMs", () => {
  const got = [0, 1, 2, 3, 4, 5, 6, 7, 20].map((failures) => reconnectBackoff({ failures, short: 0 }));
  assert.deepEqual(got, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(reconnectBackoff({ failures: 3, short: 0, maxDelayMs: 2500 }), 2500);
});

test("short connections below SupersededAfter grow the wait like failed dials", () => {
  assert.equal(SupersededAfter, 3);
  assert.equal(reconnectBackoff({ failures: 0, short: 1 }), 1000);
  assert.equal(reconnectBackoff({ failures: 0, short: 2 }), 2000);
  assert.equal(reconnectBackoff({ failures: 1, short: 2 }), 4000);
});

test("superseded: the wait keeps doubling up to supersededMaxDelayMs, never a stop", () => {
  assert.equal(SupersededMaxDelayMs, 300_000);
  const got = [3, 4, 5, 6, 7, 8, 9, 10, 11, 50, 1000].map((short) => reconnectBackoff({ failures: 0, short }));
  assert.deepEqual(got, [4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000, 300000]);
  for (const d of got) assert.ok(Number.isFinite(d) && d > 0, `a finite wait, got ${d}`);
  // A small cap (as tests configure) bounds it; it never falls under maxDelayMs.
  assert.equal(reconnectBackoff({ failures: 0, short: 8, supersededMaxDelayMs: 2000 }), 30000);
  assert.equal(reconnectBackoff({ failures: 0, short: 5, maxDelayMs: 1000, supersededMaxDelayMs: 2000 }), 2000);
  assert.equal(reconnectBackoff({ failures: 0, short: 3, maxDelayMs: 1000, supersededMaxDelayMs: 2000 }), 2000);
});

test("a connection that lasted resets the streak: back to the ordinary schedule", () => {
  assert.equal(reconnectBackoff({ failures: 0, short: 0 }), 500);
});
