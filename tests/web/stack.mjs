// What the page's test (page.test.mjs) and its delay benchmark (bench/page_delay.mjs) both
// run: herold serving clients/web, a database of its own on the tests/with-pg server with
// the outbox installed, herold-pg-source between them, and tokens for some users.

import { execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);
export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUILD = path.resolve(REPO_ROOT, process.env.HEROLD_BUILD ?? "build");
export const CHROMIUM = process.env.HEROLD_CHROMIUM ?? "/usr/bin/chromium";

export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.once("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function pgField(name) {
    const pg = process.env.HEROLD_TEST_PG;
    if (!pg) {
        throw new Error("run under tests/with-pg: HEROLD_TEST_PG is not set");
    }
    return new RegExp(name + "=(\\S+)").exec(pg)[1];
}

function psqlArgs(db) {
    return ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", pgField("host"), "-p",
            pgField("port"), "-U", pgField("user"), "-d", db];
}

/** Runs the statements in db (each -c commits on its own); resolves with the output. */
export async function psql(db, ...statements) {
    const { stdout } = await execFileP("/usr/bin/psql",
                                       [...psqlArgs(db), ...statements.flatMap((s) => ["-c", s])]);
    return stdout.trim();
}

function started(child, needle, timeoutMs) {
    return new Promise((resolve, reject) => {
        let seen = "";
        const timer = setTimeout(() => reject(new Error("no '" + needle + "' in: " + seen)),
                                 timeoutMs);
        child.stderr.on("data", (chunk) => {
            seen += chunk.toString();
            if (seen.includes(needle)) {
                clearTimeout(timer);
                resolve();
            }
        });
    });
}

/** Starts the stack; users maps a user to its comma-separated groups. Resolves with
 *  { base, db, tokens, stop() }. */
export async function startStack(users) {
    const dir = mkdtempSync(path.join(tmpdir(), "herold-web-"));
    const db = "herold_web_" + process.pid;
    await psql("postgres", `CREATE DATABASE ${db}`);
    await execFileP("/usr/bin/psql", [...psqlArgs(db), "-f",
                                      path.join(REPO_ROOT, "schemas/sql/outbox.sql")]);
    const [http, ingest] = [await freePort(), await freePort()];
    const data = path.join(dir, "data");
    mkdirSync(data);
    const herold = spawn(path.join(BUILD, "herold"), [
        "--data", data, "--http", `127.0.0.1:${http}`, "--ingest", `tcp://127.0.0.1:${ingest}`,
        "--web", path.join(REPO_ROOT, "clients/web")], { stdio: ["ignore", "ignore", "pipe"] });
    await started(herold, "ready", 10_000);
    const source = spawn(path.join(BUILD, "herold-pg-source"), [
        "--db", `host=${pgField("host")} port=${pgField("port")} user=${pgField("user")} dbname=${db}`,
        "--ingest", `tcp://127.0.0.1:${ingest}`], { stdio: ["ignore", "ignore", "pipe"] });
    await started(source, "connected", 10_000);
    const tokens = {};
    for (const [user, groups] of Object.entries(users)) {
        const { stdout } = await execFileP(path.join(BUILD, "herold"), [
            "token", user, "--groups", groups, "--data", data]);
        tokens[user] = stdout.trim();
    }
    return {
        base: `http://127.0.0.1:${http}`,
        db,
        tokens,
        async stop() {
            for (const child of [source, herold]) {
                if (child.exitCode === null) {
                    child.kill("SIGTERM");
                    await new Promise((resolve) => child.once("exit", resolve));
                }
            }
            await psql("postgres", `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
            rmSync(dir, { recursive: true, force: true });
        },
    };
}

const LABELS = {
    de: { token: "Zugangs-Token", connect: "Verbinden", resource: "Ordner, Akte oder Kalender" },
    en: { token: "Access token", connect: "Connect", resource: "Folder, file or calendar" },
};

/** Signs page in with token as user, through the form a person uses. */
export async function signIn(page, base, user, token, lang) {
    await page.goto(base + "/");
    await page.getByLabel(LABELS[lang].token).fill(token);
    await page.getByRole("button", { name: LABELS[lang].connect }).click();
    await page.getByRole("status").filter({ hasText: user }).waitFor();
}

/** Follows resource with the keyboard alone, and waits for it to be listed. */
export async function follow(page, resource, lang) {
    await page.getByLabel(LABELS[lang].resource).fill(resource);
    await page.keyboard.press("Enter");
    await page.locator("#follows code", { hasText: resource }).waitFor();
}

/** Has page record, by the browser's clock, when each alert enters #alerts; arrivalOf reads it. */
export async function recordArrivals(page) {
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
}

/** When resource's alert entered page's DOM (ms since the epoch), or undefined. */
export function arrivalOf(page, resource) {
    return page.evaluate((r) => window.arrivals[r], resource);
}
