// Builds the browser example (examples/browser) with esbuild: main.js and
// this library's TypeScript source bundled into <outdir>/app.js, an ES
// module a page loads with <script type="module">. Nothing is written into
// the repository unless --outdir says so (examples/browser/dist is
// ignored by git).
//
//   node scripts/example.mjs --outdir DIR           build once
//   node scripts/example.mjs --serve 127.0.0.1:8000 build and serve the page
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";

const { values: flags } = parseArgs({
  options: {
    outdir: { type: "string" },
    serve: { type: "string" },
  },
});
const example = fileURLToPath(new URL("../../../examples/browser/", import.meta.url));
const options = {
  entryPoints: [example + "main.js"],
  bundle: true,
  format: "esm",
  target: "es2022",
  outfile: (flags.outdir ?? example + "dist") + "/app.js",
  alias: { "@commandcontrol/session": fileURLToPath(new URL("../src/index.ts", import.meta.url)) },
  logLevel: "warning",
};

if (flags.serve) {
  const [host, port] = flags.serve.split(":");
  const ctx = await esbuild.context({ ...options, outfile: example + "dist/app.js" });
  const s = await ctx.serve({ servedir: example, host, port: Number(port) });
  console.log(`open http://${s.hosts?.[0] ?? host}:${s.port}/?server=ws://127.0.0.1:8443&app=demo (give your broker's WebSocket URL)`);
} else {
  await esbuild.build(options);
}
