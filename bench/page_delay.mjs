// bench/page_delay: the delay from a committed outbox row to its alert on the live-alert
// page, in headless Chromium, through herold-pg-source and herold.
//
//   cd tests/web && npm ci && ../with-pg env HEROLD_BUILD=/abs/build node ../../bench/page_delay.mjs [N]
//
// The page records when each alert enters the DOM (a MutationObserver, the browser's
// clock); the database reads its clock in a statement right after the one that committed
// the row (the same machine's clock). It emits N rows (default 100) 100 ms apart and prints
// p50, p90, p99 and max of the differences. The playwright-core of tests/web is used.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CHROMIUM, follow, psql, recordArrivals, signIn, startStack } from "../tests/web/stack.mjs";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const require = createRequire(path.join(REPO_ROOT, "tests/web/package.json"));
const { chromium } = require("playwright-core");
const COUNT = Number(process.argv[2] ?? 100);

const stack = await startStack({ anna: "bau" });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
const page = await (await browser.newContext({ locale: "en-GB" })).newPage();
await signIn(page, stack.base, "anna", stack.tokens.anna, "en");
await follow(page, "/dms/cabinets/bau", "en");
await recordArrivals(page);
await new Promise((resolve) => setTimeout(resolve, 500)); // the WebSocket is up

const committed = {};
for (let i = 0; i < COUNT; i++) {
    const resource = `/dms/cabinets/bau/documents/d${i}`;
    // The first statement commits on its own; the second reads the clock right after.
    const stdout = await psql(stack.db,
        `SELECT herold.emit('dms', 'updated', '${resource}', ARRAY['group:bau'])`,
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint");
    committed[resource] = Number(stdout.split("\n").pop());
    await new Promise((resolve) => setTimeout(resolve, 100));
}
await new Promise((resolve) => setTimeout(resolve, 2000));
const arrivals = await page.evaluate(() => window.arrivals);
const delays = Object.keys(committed).filter((r) => arrivals[r])
    .map((r) => arrivals[r] - committed[r]).sort((a, b) => a - b);
const at = (q) => delays[Math.min(delays.length - 1, Math.floor(q * delays.length))];
console.log(JSON.stringify({
    command: "bench/page_delay.mjs " + COUNT, rows: COUNT, shown: delays.length,
    p50_ms: at(0.5), p90_ms: at(0.9), p99_ms: at(0.99), max_ms: delays[delays.length - 1],
}, null, 1));

await browser.close();
await stack.stop();
