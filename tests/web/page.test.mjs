// herold's live-alert page (clients/web/) in headless Chromium: Debian's chromium driven by
// playwright-core, against a real herold, a real PostgreSQL (tests/with-pg) with the outbox
// (schemas/sql/outbox.sql) and herold-pg-source. A member of staff signs in with a token,
// follows a folder, and a row committed through the outbox appears on the page within a
// second; a user without read access sees nothing; after the page was away, it resumes
// from its cursor and shows what it missed. Also: both languages, labels for screen
// readers, and keyboard use.
//
// Run: cd tests/web && npm ci && tests/with-pg env HEROLD_BUILD=/abs/build node --test

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

const execFileP = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUILD = path.resolve(REPO_ROOT, process.env.HEROLD_BUILD ?? "build");
const CHROMIUM = process.env.HEROLD_CHROMIUM ?? "/usr/bin/chromium";
const PG = process.env.HEROLD_TEST_PG;
const FOLDER = "/dms/cabinets/bau";

function freePort() {
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
    const match = new RegExp(name + "=(\\S+)").exec(PG);
    return match[1];
}

async function psql(dbname, sql) {
    const { stdout } = await execFileP("/usr/bin/psql", [
        "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", pgField("host"), "-p",
        pgField("port"), "-U", pgField("user"), "-d", dbname, "-c", sql]);
    return stdout.trim();
}

function waitForLine(child, needle, timeoutMs) {
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

describe("the live-alert page", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "herold-web-"));
    const db = "herold_web_" + process.pid;
    let herold;
    let source;
    let browser;
    let base;
    let tokens;

    before(async () => {
        assert.ok(PG, "run under tests/with-pg: HEROLD_TEST_PG is not set");
        await psql("postgres", `CREATE DATABASE ${db}`);
        await execFileP("/usr/bin/psql", [
            "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pgField("host"), "-p", pgField("port"),
            "-U", pgField("user"), "-d", db, "-f",
            path.join(REPO_ROOT, "schemas/sql/outbox.sql")]);
        const [http, ingest] = [await freePort(), await freePort()];
        base = `http://127.0.0.1:${http}`;
        const data = path.join(dir, "data");
        mkdirSync(data);
        herold = spawn(path.join(BUILD, "herold"), [
            "--data", data, "--http", `127.0.0.1:${http}`, "--ingest",
            `tcp://127.0.0.1:${ingest}`, "--web", path.join(REPO_ROOT, "clients/web")],
            { stdio: ["ignore", "ignore", "pipe"] });
        await waitForLine(herold, "ready", 10_000);
        source = spawn(path.join(BUILD, "herold-pg-source"), [
            "--db", `host=${pgField("host")} port=${pgField("port")} user=${pgField("user")} dbname=${db}`,
            "--ingest", `tcp://127.0.0.1:${ingest}`], { stdio: ["ignore", "ignore", "pipe"] });
        await waitForLine(source, "connected", 10_000);
        tokens = {};
        for (const [user, groups] of [["anna", "bau"], ["bob", "it"]]) {
            const { stdout } = await execFileP(path.join(BUILD, "herold"), [
                "token", user, "--groups", groups, "--data", data]);
            tokens[user] = stdout.trim();
        }
        browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    });

    after(async () => {
        await browser?.close();
        for (const child of [source, herold]) {
            if (child && child.exitCode === null) {
                child.kill("SIGTERM");
                await new Promise((resolve) => child.once("exit", resolve));
            }
        }
        await psql("postgres", `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        rmSync(dir, { recursive: true, force: true });
    });

    async function signedInPage(user, lang) {
        const context = await browser.newContext({ locale: lang === "en" ? "en-GB" : "de-DE" });
        const page = await context.newPage();
        await page.goto(base + "/");
        await page.getByLabel(lang === "en" ? "Access token" : "Zugangs-Token").fill(tokens[user]);
        await page.getByRole("button", { name: lang === "en" ? "Connect" : "Verbinden" }).click();
        await page.getByRole("status").filter({ hasText: user }).waitFor();
        // The token is in use, not left on screen.
        assert.equal(await page.locator("#token").inputValue(), "");
        return page;
    }

    async function followFolder(page, lang) {
        await page.getByLabel(lang === "en" ? "Folder, file or calendar" : "Ordner, Akte oder Kalender")
            .fill(FOLDER);
        await page.keyboard.press("Enter"); // the keyboard alone follows
        await page.locator("#follows code", { hasText: FOLDER }).waitFor();
    }

    function emit(resource, readers, actor) {
        return psql(db, `SELECT herold.emit('dms', 'created', '${resource}', ARRAY['${readers}'],`
                        + ` 'document', NULL, NULL, '${actor}')`);
    }

    it("shows a change committed through the outbox within a second, and only to readers",
       async () => {
           const anna = await signedInPage("anna", "de");
           const bob = await signedInPage("bob", "en");
           await followFolder(anna, "de");
           await followFolder(bob, "en");
           const resource = FOLDER + "/documents/4711";
           const started = Date.now();
           await emit(resource, "group:bau", "user:carla");
           const alert = anna.locator(`#alerts li[data-resource="${resource}"]`);
           await alert.waitFor({ timeout: 5000 });
           const delay = Date.now() - started;
           assert.ok(delay < 1000, `the alert took ${delay} ms`);
           const text = await alert.innerText();
           assert.match(text, /neu/i);
           assert.match(text, /4711/);
           assert.match(text, /von carla/);
           // bob may not read group:bau's documents: nothing, while a later one for it arrives.
           await emit(FOLDER + "/documents/for-it", "group:it", "user:carla");
           await bob.locator(`#alerts li[data-resource="${FOLDER}/documents/for-it"]`).waitFor();
           assert.equal(await bob.locator(`#alerts li[data-resource="${resource}"]`).count(), 0);
           assert.match(await bob.locator("#alerts").innerText(), /new/i);
           await anna.screenshot({ path: path.join(REPO_ROOT, "docs", "staff-page.png"),
                                   fullPage: true });
           await anna.context().close();
           await bob.context().close();
       });

    it("resumes from its cursor after being away and marks what it missed", async () => {
        const anna = await signedInPage("anna", "en");
        const first = FOLDER + "/documents/before";
        await emit(first, "group:bau", "user:anna");
        await anna.locator(`#alerts li[data-resource="${first}"]`).waitFor();
        await anna.goto("about:blank"); // the page is gone; its WebSocket closes
        const missed = FOLDER + "/documents/while-away";
        await emit(missed, "group:bau", "user:dora");
        await new Promise((resolve) => setTimeout(resolve, 1200)); // clearly before the return
        await anna.goto(base + "/"); // same tab: the token and cursor are still there
        const item = anna.locator(`#alerts li[data-resource="${missed}"]`);
        await item.waitFor({ timeout: 5000 });
        assert.equal(await item.getAttribute("class"), "missed");
        assert.match(await anna.locator("#missed").innerText(), /while you were not connected/);
        // The cursor moved past what was shown before: it is not repeated.
        assert.equal(await anna.locator(`#alerts li[data-resource="${first}"]`).count(), 0);
        await anna.context().close();
    });

    it("switches language, and every control has a name", async () => {
        const context = await browser.newContext({ locale: "de-DE" });
        const page = await context.newPage();
        await page.goto(base + "/");
        assert.equal(await page.locator("html").getAttribute("lang"), "de");
        await page.getByRole("button", { name: "English" }).click();
        assert.equal(await page.locator("html").getAttribute("lang"), "en");
        await page.getByRole("heading", { name: "Live alerts" }).waitFor();
        for (const input of await page.locator("input, textarea").all()) {
            const id = await input.getAttribute("id");
            assert.equal(await page.locator(`label[for="${id}"]`).count(), 1, `no label for #${id}`);
        }
        // From the token field, Tab reaches the connect button.
        await page.focus("#token");
        await page.keyboard.press("Tab");
        assert.equal(await page.evaluate(() => document.activeElement.textContent), "Connect");
        await context.close();
    });
});
