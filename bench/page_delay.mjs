// bench/page_delay: the delay from a committed outbox row to its alert on the live-alert
// page, in headless Chromium, through herold-pg-source and herold.
//
//   cd tests/web && npm ci && ../with-pg env HEROLD_BUILD=/abs/build node ../../bench/page_delay.mjs [N]
//
// The page records when each alert enters the DOM (a MutationObserver, the browser's
// clock); the database reads its clock in a statement right after the one that committed
// the row (the same machine's clock). It emits N rows (default 100) 100 ms apart and prints p50, p90, p99
// and max of the differences. The playwright-core of tests/web is used.

import { execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const require = createRequire(path.join(REPO_ROOT, "tests/web/package.json"));
const { chromium } = require("playwright-core");
const BUILD = path.resolve(REPO_ROOT, process.env.HEROLD_BUILD ?? "build");
const PG = process.env.HEROLD_TEST_PG;
const COUNT = Number(process.argv[2] ?? 100);

const field = (name) => new RegExp(name + "=(\\S+)").exec(PG)[1];
const psqlArgs = (db) => ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", field("host"),
                          "-p", field("port"), "-U", field("user"), "-d", db];

function freePort() {
    return new Promise((resolve) => {
        const srv = net.createServer();
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function started(child, needle) {
    return new Promise((resolve) => {
        let seen = "";
        child.stderr.on("data", (chunk) => {
            seen += chunk;
            if (seen.includes(needle)) {
                resolve();
            }
        });
    });
}

const dir = mkdtempSync(path.join(tmpdir(), "herold-page-delay-"));
const db = "herold_delay_" + process.pid;
await execFileP("/usr/bin/psql", [...psqlArgs("postgres"), "-c", `CREATE DATABASE ${db}`]);
await execFileP("/usr/bin/psql", [...psqlArgs(db), "-f",
                                  path.join(REPO_ROOT, "schemas/sql/outbox.sql")]);
const [http, ingest] = [await freePort(), await freePort()];
const data = path.join(dir, "data");
mkdirSync(data);
const herold = spawn(path.join(BUILD, "herold"), [
    "--data", data, "--http", `127.0.0.1:${http}`, "--ingest", `tcp://127.0.0.1:${ingest}`,
    "--web", path.join(REPO_ROOT, "clients/web")], { stdio: ["ignore", "ignore", "pipe"] });
await started(herold, "ready");
const source = spawn(path.join(BUILD, "herold-pg-source"), [
    "--db", `host=${field("host")} port=${field("port")} user=${field("user")} dbname=${db}`,
    "--ingest", `tcp://127.0.0.1:${ingest}`], { stdio: ["ignore", "ignore", "pipe"] });
await started(source, "connected");
const { stdout: token } = await execFileP(path.join(BUILD, "herold"), [
    "token", "anna", "--groups", "bau", "--data", data]);

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
                                        args: ["--no-sandbox"] });
const page = await (await browser.newContext({ locale: "en-GB" })).newPage();
await page.goto(`http://127.0.0.1:${http}/`);
await page.getByLabel("Access token").fill(token.trim());
await page.getByRole("button", { name: "Connect" }).click();
await page.getByRole("status").filter({ hasText: "anna" }).waitFor();
await page.getByLabel("Folder, file or calendar").fill("/dms/cabinets/bau");
await page.keyboard.press("Enter");
await page.locator("#follows code").waitFor();
await page.evaluate(() => {
    window.arrivals = {};
    new MutationObserver((records) => {
        for (const r of records) {
            for (const node of r.addedNodes) {
                if (node.dataset && node.dataset.resource) {
                    window.arrivals[node.dataset.resource] = Date.now();
                }
            }
        }
    }).observe(document.getElementById("alerts"), { childList: true });
});
await new Promise((resolve) => setTimeout(resolve, 500)); // the WebSocket is up

const committed = {};
for (let i = 0; i < COUNT; i++) {
    const resource = `/dms/cabinets/bau/documents/d${i}`;
    // The first statement commits on its own; the second reads the clock right after.
    const { stdout } = await execFileP("/usr/bin/psql", [...psqlArgs(db), "-c",
        `SELECT herold.emit('dms', 'updated', '${resource}', ARRAY['group:bau'])`, "-c",
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"]);
    committed[resource] = Number(stdout.trim().split("\n").pop());
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
for (const child of [source, herold]) {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
}
await execFileP("/usr/bin/psql", [...psqlArgs("postgres"), "-c",
                                  `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]);
rmSync(dir, { recursive: true, force: true });
