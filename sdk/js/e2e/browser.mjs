// Drives the browser example (examples/browser) in a real headless
// Chromium for the end-to-end tests (e2e/sessions_sdk_test.go): opens the
// page, reports the session it joined as JSON lines on stdout, reloads
// it when told ("reload" on stdin), opens the page in a second tab of the
// same browser ("tab": same origin, same localStorage, a sessionStorage
// of its own) and closes the browser when stdin closes.
//
//   node e2e/browser.mjs --page URL [--chromium /usr/bin/chromium]
//
// It never downloads a browser: it runs the one installed (Debian's
// chromium package).
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: flags } = parseArgs({
  options: {
    page: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const browser = await chromium.launch({
  executablePath: flags.chromium,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
});
// One context: its pages are tabs of one browser profile.
const context = await browser.newContext();

async function newTab(tab) {
  const page = await context.newPage();
  page.on("console", (m) => out({ event: "console", tab, type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => out({ event: "pageerror", tab, error: e.message }));
  return page;
}
const page = await newTab(0);

// joined waits for the page to show its session joined (or failed).
async function joined(page, tab = 0) {
  const h = await page.waitForFunction(() => {
    const st = document.querySelector("#state")?.textContent ?? "";
    return st === "serving" || st.startsWith("failed") ? st : false;
  }, null, { timeout: 30_000 });
  const state = await h.jsonValue();
  const id = await page.textContent("#session-id");
  out({ event: state === "serving" ? "joined" : "failed", id, state, tab });
}

try {
  await page.goto(flags.page);
  await joined(page);
} catch (e) {
  out({ event: "failed", error: e.message });
  await browser.close();
  process.exit(1);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  try {
    if (line === "reload") {
      await page.reload();
      await joined(page);
    } else if (line === "tab") {
      const second = await newTab(1);
      await second.goto(flags.page);
      await joined(second, 1);
    } else if (line === "calls") {
      out({ event: "calls", text: await page.textContent("#calls") });
    }
  } catch (e) {
    out({ event: "failed", error: e.message });
  }
}
await browser.close();
