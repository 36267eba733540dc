// An unmodified Microsoft Graph client library manages herold subscriptions through its
// public API, and a Standard Webhooks library verifies the notifications herold sends.
//
// Run: cd tests/graph && npm ci && HEROLD_BUILD=/abs/path/to/build node --test
//
// Why herold serves https here: the Graph client only attaches the bearer token to https URLs
// (AuthenticationHandler.execute → isCustomHost → isValidEndpoint, which accepts nothing but
// "https://"; over http it even deletes an Authorization header set by hand), and it only
// follows an @odata.nextLink that starts with "https://" (GraphRequest.parsePath). So the test
// makes a throwaway self-signed certificate for IP 127.0.0.1, starts herold with --tls-cert and
// --tls-key, and gives the client https://127.0.0.1:<port>/ with no proxy in between. The
// client trusts the certificate through fetchOptions.dispatcher (an undici Agent with our CA),
// which is the client's public option for fetch settings.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Client, GraphError, PageIterator } from "@microsoft/microsoft-graph-client";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { Agent } from "undici";

import { freePort } from "../web/stack.mjs";

const execFileP = promisify(execFile);

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUILD = path.resolve(REPO_ROOT, process.env.HEROLD_BUILD ?? "build");
const HEROLD = path.join(BUILD, "herold");
const HEROLD_PUB = path.join(BUILD, "herold-pub");

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const DELIVERY_TIMEOUT_MS = 10_000;
const CHILD_TIMEOUT_MS = 10_000;

const HOUR_MS = 3600 * 1000;
const SUBSCRIBED = "/dms/cabinets/bau";
const CHANGED = "/dms/cabinets/bau/documents/4711";

function listen(server) {
    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve(server.address().port));
    });
}

function closeServer(server) {
    if (!server || !server.listening) {
        return Promise.resolve();
    }
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves with the value once check() returns something truthy; checked on every wake-up. */
function waitFor(what, emitter, check, timeoutMs) {
    return new Promise((resolve, reject) => {
        const probe = () => {
            const got = check();
            if (got) {
                cleanup();
                resolve(got);
            }
        };
        const timer = setTimeout(() => {
            cleanup();
            reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
        }, timeoutMs);
        const cleanup = () => {
            clearTimeout(timer);
            emitter.off("change", probe);
        };
        emitter.on("change", probe);
        probe();
    });
}

/**
 * herold keeps expirations to the second (it answers .0000000Z), Graph to the 100 ns: accept
 * any answer within the second that was asked for.
 */
function assertSameSecond(answered, asked) {
    assert.match(answered, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    const delta = new Date(answered).getTime() - asked.getTime();
    assert.ok(Math.abs(delta) < 1000, `asked for ${asked.toISOString()}, got ${answered}`);
}

/** herold on free loopback ports with its own data directory, serving https with tls. */
class Broker {
    constructor(dir, tls) {
        this.tls = tls;
        this.data = path.join(dir, "data");
        this.stderr = [];
        this.proc = null;
        this.exit = null;
    }

    async start() {
        assert.ok(existsSync(HEROLD), `${HEROLD} is missing: build first (HEROLD_BUILD=${BUILD})`);
        this.httpPort = await freePort();
        this.ingestPort = await freePort();
        this.ingest = `tcp://127.0.0.1:${this.ingestPort}`;
        this.proc = spawn(
            HEROLD,
            [
                "--http", `127.0.0.1:${this.httpPort}`,
                "--ingest", this.ingest,
                "--data", this.data,
                "--webhook-allow-private",
                "--tls-cert", this.tls.certPath,
                "--tls-key", this.tls.keyPath,
            ],
            { stdio: ["ignore", "ignore", "pipe"] },
        );
        this.exited = new Promise((resolve) => {
            this.proc.once("exit", (code, signal) => {
                this.exit = { code, signal };
                resolve(this.exit);
            });
        });
        const lines = createInterface({ input: this.proc.stderr });
        const ready = new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                reject(new Error(`herold printed no ready line within ${START_TIMEOUT_MS} ms`));
            }, START_TIMEOUT_MS);
            lines.on("line", (line) => {
                this.stderr.push(line);
                if (/\bready\b/.test(line)) {
                    clearTimeout(timer);
                    this.readyLine = line;
                    resolve();
                }
            });
            this.proc.once("error", (err) => {
                clearTimeout(timer);
                reject(err);
            });
            this.exited.then((ex) => {
                clearTimeout(timer);
                reject(new Error(`herold exited before ready: ${JSON.stringify(ex)}`));
            });
        });
        try {
            await ready;
        } catch (err) {
            err.message += `\nherold stderr:\n${this.stderr.join("\n")}`;
            throw err;
        }
    }

    async token(user, groups) {
        const { stdout } = await execFileP(
            HEROLD, ["token", user, "--groups", groups.join(","), "--data", this.data],
            { timeout: CHILD_TIMEOUT_MS },
        );
        const token = stdout.trim();
        assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, "herold token printed a JWT");
        return token;
    }

    async publish(args) {
        const { stdout } = await execFileP(
            HEROLD_PUB, ["--ingest", this.ingest, ...args], { timeout: CHILD_TIMEOUT_MS },
        );
        return stdout.trim().split("\n").map((line) => JSON.parse(line));
    }

    /** SIGTERM and wait; returns {code, signal}. */
    async stop() {
        if (this.proc && this.exit === null) {
            this.proc.kill("SIGTERM");
            const timer = setTimeout(() => this.proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
            await this.exited;
            clearTimeout(timer);
        }
        return this.exit;
    }
}

/** A webhook endpoint: answers the validation handshake, records notification POSTs. */
class Receiver {
    constructor() {
        this.validations = [];
        this.posts = [];
        this.events = new EventEmitter(); // "change" after every request
        this.server = http.createServer((req, res) => this.handle(req, res));
    }

    async start() {
        this.port = await listen(this.server);
        this.url = `http://127.0.0.1:${this.port}/hook`;
    }

    handle(req, res) {
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", () => {
            const url = new URL(req.url, `http://${req.headers.host}`);
            const body = Buffer.concat(chunks).toString("utf8");
            const token = url.searchParams.get("validationToken");
            if (req.method === "POST" && token !== null) {
                this.validations.push({ token, headers: req.headers, body });
                res.writeHead(200, { "Content-Type": "text/plain" });
                res.end(token);
            } else if (req.method === "POST") {
                this.posts.push({ body, headers: req.headers });
                res.writeHead(202);
                res.end();
            } else {
                res.writeHead(405);
                res.end();
            }
            this.events.emit("change");
        });
    }
}

/**
 * A self-signed certificate for IP 127.0.0.1, made with the openssl command line tool: the
 * file names (for herold) and the certificate itself (the client's CA).
 */
async function makeCertificate(dir) {
    const keyPath = path.join(dir, "tls.key");
    const certPath = path.join(dir, "tls.crt");
    await execFileP("openssl", [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", "/CN=herold graph test", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", keyPath, "-out", certPath,
    ], { timeout: CHILD_TIMEOUT_MS });
    return { keyPath, certPath, cert: readFileSync(certPath) };
}

describe("Microsoft Graph client against herold", () => {
    let dir;
    let broker;
    let receiver;
    let dispatcher;
    let baseUrl;
    let client;
    let token;
    let sub; // the creation response
    let clientState;

    before(async () => {
        dir = mkdtempSync(path.join(tmpdir(), "herold-graph-"));
        const tls = await makeCertificate(dir);
        broker = new Broker(dir, tls);
        await broker.start();
        token = await broker.token("anna", ["bau"]);

        receiver = new Receiver();
        await receiver.start();

        baseUrl = `https://127.0.0.1:${broker.httpPort}/`;
        dispatcher = new Agent({ connect: { ca: tls.cert } });

        client = Client.init({
            authProvider: (done) => done(null, token),
            baseUrl,
            defaultVersion: "v1.0",
            customHosts: new Set(["127.0.0.1"]),
            fetchOptions: { dispatcher },
        });
    });

    after(async () => {
        if (broker) {
            await broker.stop();
        }
        await closeServer(receiver?.server);
        await dispatcher?.close();
        if (dir) {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    it("creates a subscription, after the webhook validation handshake", async () => {
        clientState = `graph-test-${randomUUID()}`;
        const expiration = new Date(Date.now() + HOUR_MS);
        sub = await client.api("/subscriptions").post({
            changeType: "created,updated",
            notificationUrl: receiver.url,
            resource: SUBSCRIBED,
            expirationDateTime: expiration.toISOString(),
            clientState,
        });

        assert.match(sub.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        assert.equal(sub.resource, SUBSCRIBED);
        assert.equal(sub.changeType, "created,updated");
        assert.equal(sub.notificationUrl, receiver.url);
        assert.equal(sub.clientState, clientState);
        assert.equal(sub.creatorId, "anna");
        assertSameSecond(sub.expirationDateTime, expiration);
        assert.match(sub.signingSecret, /^whsec_[A-Za-z0-9+/]+={0,2}$/);

        assert.equal(receiver.validations.length, 1, "one validation request before the 201");
        assert.match(receiver.validations[0].headers["content-type"], /^text\/plain\b/);
        assert.equal(receiver.posts.length, 0, "no notification before any event");
    });

    it("lists the caller's subscriptions", async () => {
        const list = await client.api("/subscriptions").get();
        assert.ok(Array.isArray(list.value), "a list has value[]");
        const ids = list.value.map((s) => s.id);
        assert.deepEqual(ids, [sub.id]);
        assert.equal(list.value[0].resource, SUBSCRIBED);
        assert.equal(list.value[0].clientState, null, "lists show no clientState");
        assert.equal(list.value[0].signingSecret, undefined, "no signingSecret outside creation");
    });

    it("fetches one subscription", async () => {
        const one = await client.api(`/subscriptions/${sub.id}`).get();
        assert.equal(one.id, sub.id);
        assert.equal(one.clientState, clientState);
        assert.equal(one.expirationDateTime, sub.expirationDateTime);
        assert.equal(one.signingSecret, undefined, "no signingSecret outside creation");
    });

    it("herold serves this client over TLS itself", () => {
        assert.match(broker.readyLine, /\bhttp=https:\/\/127\.0\.0\.1:\d+\b/,
            "the ready line names an https listener");
        assert.ok(baseUrl.startsWith(`https://127.0.0.1:${broker.httpPort}/`),
            "the client talks to herold's own port, no proxy");
    });

    // The Graph client follows @odata.nextLink only when it starts with "https://"
    // (GraphRequest.parsePath); anything else would become a path under baseUrl.
    it("pages through the list with PageIterator", async () => {
        const extra = [];
        try {
            for (const resource of ["/dms/cabinets/bau/a", "/dms/cabinets/bau/b"]) {
                const more = await client.api("/subscriptions").post({
                    changeType: "created",
                    notificationUrl: "websocket:",
                    resource,
                    expirationDateTime: new Date(Date.now() + HOUR_MS).toISOString(),
                });
                extra.push(more.id);
            }
            const first = await client.api("/subscriptions").top(1).get();
            assert.equal(first.value.length, 1);
            assert.ok(first["@odata.nextLink"], "more remain, so there is a nextLink");
            assert.ok(first["@odata.nextLink"].startsWith(`${baseUrl}v1.0/subscriptions?`),
                `nextLink ${first["@odata.nextLink"]} is not under ${baseUrl}`);
            const seen = [];
            await new PageIterator(client, first, (s) => {
                seen.push(s.id);
                return true;
            }).iterate();
            assert.deepEqual(seen, [sub.id, ...extra], "every subscription once, oldest first");
        } finally {
            for (const id of extra) {
                await client.api(`/subscriptions/${id}`).delete();
            }
        }
    });

    it("renews a subscription", async () => {
        const renewed = new Date(Date.now() + 2 * HOUR_MS);
        const patched = await client.api(`/subscriptions/${sub.id}`).patch({
            expirationDateTime: renewed.toISOString(),
        });
        assert.equal(patched.id, sub.id);
        assertSameSecond(patched.expirationDateTime, renewed);
        assert.ok(new Date(patched.expirationDateTime) > new Date(sub.expirationDateTime));

        const again = await client.api(`/subscriptions/${sub.id}`).get();
        assert.equal(again.expirationDateTime, patched.expirationDateTime);
        sub.expirationDateTime = patched.expirationDateTime;
    });

    it("delivers a matching event as a webhook that standardwebhooks verifies", async () => {
        const replies = await broker.publish([
            "--source", "dms", "--resource", CHANGED, "--readers", "group:bau",
            "--kind", "document",
        ]);
        assert.equal(replies.length, 1);
        assert.equal(replies[0].ok, true, `herold-pub reply: ${JSON.stringify(replies[0])}`);

        const post = await waitFor(
            "the webhook POST", receiver.events, () => receiver.posts[0], DELIVERY_TIMEOUT_MS,
        );
        assert.match(post.headers["content-type"], /^application\/json\b/);

        const payload = new Webhook(sub.signingSecret).verify(post.body, post.headers);
        assert.deepEqual(payload, JSON.parse(post.body), "verify() returns the payload");
        assert.equal(payload.value.length, 1);
        const item = payload.value[0];
        assert.equal(item.subscriptionId, sub.id);
        assert.equal(item.clientState, clientState);
        assert.equal(item.resource, CHANGED);
        assert.equal(item.changeType, "updated");
        assert.equal(item.subscriptionExpirationDateTime, sub.expirationDateTime);
        assert.equal(item.resourceData["@odata.id"], CHANGED);
        assert.equal(item.resourceData.id, "4711");

        const tampered = post.body.replace('"4711"', '"4712"');
        assert.notEqual(tampered, post.body);
        assert.throws(
            () => new Webhook(sub.signingSecret).verify(tampered, post.headers),
            WebhookVerificationError,
        );
        const otherSecret = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
        assert.throws(
            () => new Webhook(otherSecret).verify(post.body, post.headers),
            WebhookVerificationError,
        );
    });

    it("deletes a subscription; fetching it then fails with a 404 GraphError", async () => {
        const deleted = await client.api(`/subscriptions/${sub.id}`).delete();
        assert.equal(deleted, undefined, "204, no body");

        await assert.rejects(client.api(`/subscriptions/${sub.id}`).get(), (err) => {
            assert.ok(err instanceof GraphError, `a GraphError, got ${err}`);
            assert.equal(err.statusCode, 404);
            assert.equal(err.code, "not_found");
            assert.ok(err.requestId, "the error names its request-id");
            assert.equal(err.headers.get("request-id"), err.requestId);
            return true;
        });
        const list = await client.api("/subscriptions").get();
        assert.deepEqual(list.value, []);
    });

    it("herold stops with exit code 0 on SIGTERM", async () => {
        const exit = await broker.stop();
        assert.deepEqual(exit, { code: 0, signal: null },
            `herold stderr:\n${broker.stderr.join("\n")}`);
    });
});
