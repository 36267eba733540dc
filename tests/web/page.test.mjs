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
import path from "node:path";

import { chromium } from "playwright-core";

import {
    CHROMIUM, REPO_ROOT, arrivalOf, follow, psql, recordArrivals, signIn, startStack,
} from "./stack.mjs";

const FOLDER = "/dms/cabinets/bau";

describe("the live-alert page", () => {
    let stack;
    let browser;
    let base;

    before(async () => {
        stack = await startStack({ anna: "bau", bob: "it" });
        base = stack.base;
        browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    });

    after(async () => {
        await browser?.close();
        await stack?.stop();
    });

    async function signedInPage(user, lang) {
        const context = await browser.newContext({ locale: lang === "en" ? "en-GB" : "de-DE" });
        const page = await context.newPage();
        await signIn(page, base, user, stack.tokens[user], lang);
        // The token is in use, not left on screen.
        assert.equal(await page.locator("#token").inputValue(), "");
        return page;
    }

    function followFolder(page, lang) {
        return follow(page, FOLDER, lang); // the keyboard alone follows
    }

    function emitCall(resource, readers, actor) {
        return `herold.emit('dms', 'created', '${resource}', ARRAY['${readers}'], 'document',`
               + ` NULL, NULL, '${actor}')`;
    }

    function emit(resource, readers, actor) {
        return psql(stack.db, "SELECT " + emitCall(resource, readers, actor));
    }

    it("shows a change committed through the outbox within a second, and only to readers",
       async () => {
           const anna = await signedInPage("anna", "de");
           const bob = await signedInPage("bob", "en");
           await followFolder(anna, "de");
           await followFolder(bob, "en");
           await recordArrivals(anna);
           const resource = FOLDER + "/documents/4711";
           // The database's clock, read in the transaction that commits the row, so before
           // the commit: the delay measured is at least the real one. Starting psql and
           // playwright's polling are not the broker's delay and are left out; on a busy
           // machine they took most of a second.
           const row = await psql(stack.db,
                                  `SELECT ${emitCall(resource, "group:bau", "user:carla")},`
                                  + " (extract(epoch FROM clock_timestamp()) * 1000)::bigint");
           const committed = Number(row.split("|").pop()); // psql -A -t: "emitted|clock"
           assert.ok(committed > 0, `no clock in ${JSON.stringify(row)}`);
           const alert = anna.locator(`#alerts li[data-resource="${resource}"]`);
           await alert.waitFor({ timeout: 5000 });
           const delay = (await arrivalOf(anna, resource)) - committed;
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
