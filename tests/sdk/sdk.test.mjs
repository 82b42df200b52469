// Cairn running real Inngest SDK apps (app.mjs) in signed mode: every opcode, retries and
// errors handed back, invoke both ways, onFailure, cancelOn, a re-sync that removes a
// function, wrong keys in each direction, and crashes of the app and of cairn.
// Run by run.sh, which sets CAIRN_BIN, CAIRN_TEST_DB, CAIRN_TEST_WORK and SDK_APP_FILE.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const bin = process.env.CAIRN_BIN;
const db = process.env.CAIRN_TEST_DB;
const work = process.env.CAIRN_TEST_WORK;
const appFile = process.env.SDK_APP_FILE;
const signingKey = "signkey-test-" + crypto.randomBytes(32).toString("hex");
const counts = path.join(work, "counts.jsonl");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha1 = (s) => crypto.createHash("sha1").update(s).digest("hex");

let cairn; // {proc, base}
let app; // {proc, url, port}
let adminKey;
let eventsKey;

function cli(...args) {
  return execFileSync(bin, [...args, "--db", db], {
    env: { ...process.env, CAIRN_SIGNING_KEY: signingKey },
    stdio: ["ignore", "pipe", "pipe"],
  }).toString();
}

function waitForLine(proc, stream, pattern, what) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${seen.slice(-2000)}`)), 20000);
    proc[stream].on("data", (chunk) => {
      seen += chunk.toString();
      const m = seen.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    proc.on("exit", (code) => reject(new Error(`${what} exited with ${code}: ${seen.slice(-2000)}`)));
  });
}

async function startCairn() {
  // A short lease: runs held by a killed process are taken over within it.
  const proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--examples", "--lease-ms", "3000", "--db", db], {
    env: { ...process.env, CAIRN_SIGNING_KEY: signingKey },
    stdio: ["ignore", "ignore", "pipe"],
  });
  proc.stderr.pipe(fs.createWriteStream(path.join(work, "cairn.log"), { flags: "a" }));
  const m = await waitForLine(proc, "stderr", /serving (http:\/\/[0-9.:]+)/, "cairn");
  return { proc, base: m[1] };
}

async function startApp({ port = 0, key = signingKey, functions = "" } = {}) {
  const proc = spawn(process.execPath, [appFile], {
    env: {
      ...process.env,
      PORT: String(port),
      COUNTS: counts,
      FUNCTIONS: functions,
      INNGEST_DEV: "0",
      INNGEST_BASE_URL: cairn.base,
      INNGEST_SIGNING_KEY: key,
      INNGEST_EVENT_KEY: eventsKey,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const m = await waitForLine(proc, "stdout", /on (http:\/\/127\.0\.0\.1:(\d+)\/api\/inngest)/, "the app");
  return { proc, url: m[1], port: Number(m[2]) };
}

async function stop(p, signal = "SIGTERM") {
  if (!p || p.proc.exitCode !== null) return;
  const exited = new Promise((r) => p.proc.on("exit", r));
  p.proc.kill(signal);
  await exited;
}

async function api(method, route, body, key = adminKey) {
  const res = await fetch(cairn.base + route, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function send(name, data = {}, extra = {}) {
  const res = await fetch(`${cairn.base}/e/${eventsKey}`, {
    method: "POST",
    body: JSON.stringify({ name, data, ...extra }),
  });
  const body = await res.json();
  assert.equal(body.status, 200, JSON.stringify(body));
  return body.ids[0];
}

// The run an event started for a workflow, once it reaches one of `statuses`.
async function runOf(workflow, eventId, statuses = ["completed", "failed", "cancelled"], timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await api("GET", `/api/engine/runs?workflow=${workflow}&limit=1000`);
    const run = body.runs.find((r) => r.event_id === eventId);
    if (run && statuses.includes(run.status)) return (await api("GET", `/api/engine/runs/${run.id}`)).body;
    if (Date.now() > deadline)
      throw new Error(`no ${statuses} run of ${workflow} for ${eventId}: ${JSON.stringify(run)}`);
    await sleep(100);
  }
}

function countsOf(runId) {
  if (!fs.existsSync(counts)) return [];
  return fs.readFileSync(counts, "utf8").trim().split("\n").filter(Boolean)
    .map((l) => JSON.parse(l)).filter((c) => c.run === runId);
}
const tally = (runId) => countsOf(runId).reduce((m, c) => ({ ...m, [c.step]: (m[c.step] || 0) + 1 }), {});

async function sync(url) {
  const res = await api("POST", "/api/engine/apps", { url });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

before(async () => {
  cli("migrate");
  adminKey = JSON.parse(cli("keys", "create", "--name", "admin", "--scope", "admin", "--json")).key;
  eventsKey = JSON.parse(cli("keys", "create", "--name", "app", "--scope", "events", "--json")).key;
  cairn = await startCairn();
  app = await startApp();
  const synced = await sync(app.url);
  assert.equal(synced.id, "sdk-test");
  assert.ok(synced.functions.length >= 14, JSON.stringify(synced));
});

after(async () => {
  await stop(app, "SIGKILL");
  await stop(cairn, "SIGKILL");
});

test("an SDK function is listed beside the native workflows, marked with its app", async () => {
  const { body } = await api("GET", "/api/engine/workflows");
  const steps = body.workflows.find((w) => w.id === "sdk-test-steps");
  assert.ok(steps, "sdk-test-steps is listed");
  assert.equal(steps.app, "sdk-test");
  assert.deepEqual(steps.triggers, ["test/steps"]);
  assert.equal(body.workflows.find((w) => w.id === "hello").app, null);
  const listed = cli("apps", "list");
  assert.match(listed, /sdk-test\s+\d+\s+js:v3/);
  assert.match(cli("workflows", "list"), /^sdk-test-steps +1 +sdk-test +active +test\/steps /m);
});

test("each step runs once and its result is recorded under the SDK's hashed id", async () => {
  const id = await send("test/steps", { n: 1 });
  const run = await runOf("sdk-test-steps", id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.output, { a: 2, b: 4, c: 7, d: 70, e: 71 });
  assert.deepEqual(tally(run.id), { a: 1, b: 1, c: 1, d: 1, e: 1 });
  assert.deepEqual(run.steps.map((s) => s.key), ["a", "b", "c", "d", "e"].map(sha1));
  assert.deepEqual(run.steps[0].output, { data: 2 });
});

// The ends of run `runId` the "ends" function noted, once `n` arrived (and a second more).
async function endsOf(runId, n) {
  const ended = () => countsOf(`ends/${runId}`);
  const deadline = Date.now() + 15000;
  while (ended().length < n) {
    if (Date.now() > deadline) throw new Error(`${n} end events for ${runId}: ${JSON.stringify(ended())}`);
    await sleep(100);
  }
  await sleep(1000);
  return ended();
}

test("a run's end is announced once: inngest/function.finished with its result", async () => {
  const id = await send("test/steps", { n: 5, watch: true });
  const run = await runOf("sdk-test-steps", id);
  assert.equal(run.status, "completed");
  const ends = await endsOf(run.id, 1);
  assert.equal(ends.length, 1, JSON.stringify(ends));
  assert.equal(ends[0].step, "inngest/function.finished");
  assert.equal(ends[0].status, "Completed");
  assert.deepEqual(ends[0].result, run.output);
});

test("a run cancelled while the app runs a step records nothing after; its end is announced", async () => {
  const id = await send("test/steps", { n: 1, slow_ms: 2500, watch: true });
  const started = await runOf("sdk-test-steps", id, ["running"]);
  const deadline = Date.now() + 15000;
  while (!tally(started.id).c) {
    if (Date.now() > deadline) throw new Error("step c did not start");
    await sleep(50);
  }
  const cancelled = await api("POST", `/api/engine/runs/${started.id}/cancel`);
  assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  await sleep(4000); // step c's answer arrives meanwhile and is dropped
  const run = (await api("GET", `/api/engine/runs/${started.id}`)).body;
  assert.equal(run.status, "cancelled");
  assert.deepEqual(run.steps.map((st) => st.key), ["a", "b"].map(sha1));
  assert.deepEqual(tally(run.id), { a: 1, b: 1, c: 1 });
  const ends = await endsOf(run.id, 2);
  assert.deepEqual(ends.map((e) => e.step).sort(), ["inngest/function.cancelled", "inngest/function.finished"]);
  assert.deepEqual(ends.map((e) => e.status), ["Cancelled", "Cancelled"]);
});

test("flow control from the SDK config: concurrency per key, batches, rate limits", async () => {
  const { body: listing } = await api("GET", "/api/engine/workflows");
  const limited = listing.workflows.find((w) => w.id === "sdk-test-limited");
  assert.equal(limited.flow_control.summary, "concurrency 1 per event.data.k");

  const ids = [];
  for (let i = 0; i < 4; i++) ids.push(await send("test/limited", { k: "a" }));
  ids.push(await send("test/limited", { k: "b" }));
  const runs = [];
  for (const id of ids) runs.push(await runOf("sdk-test-limited", id));
  assert.ok(runs.every((r) => r.status === "completed"), JSON.stringify(runs.map((r) => r.status)));
  const spans = runs.slice(0, 4).map((r) => countsOf(r.id).find((c) => c.step === "work"))
    .sort((x, y) => x.began - y.began);
  for (let i = 1; i < spans.length; i++)
    assert.ok(spans[i].began >= spans[i - 1].ended, `key a overlapped: ${JSON.stringify(spans)}`);

  const batch = [];
  for (let n = 1; n <= 3; n++) batch.push(await send("test/batched", { n }));
  const run = await runOf("sdk-test-batched", batch[0]);
  assert.deepEqual(run.output, [1, 2, 3]);

  const first = await send("test/once", { k: "x" });
  assert.equal((await runOf("sdk-test-once", first)).output, "x");
  const second = await send("test/once", { k: "x" });
  const { body: events } = await api("GET", "/api/engine/events?name=test/once&limit=10");
  const skipped = events.events.find((e) => e.id === second);
  assert.deepEqual(skipped.run_ids, []);
  assert.deepEqual(skipped.skipped.map((s) => [s.workflow_id, s.reason]), [["sdk-test-once", "rate limited"]]);
});

test("a wildcard trigger (test/wild.*) starts on every name it prefixes", async () => {
  const id = await send("test/wild.one");
  const run = await runOf("sdk-test-wild", id);
  assert.equal(run.status, "completed");
  assert.equal(run.output, "test/wild.one");
  const other = await send("test/wildly");
  await sleep(300);
  const { body } = await api("GET", "/api/engine/runs?workflow=sdk-test-wild&limit=1000");
  assert.ok(!body.runs.some((r) => r.event_id === other), "test/wildly is not under test/wild.");
});

test("an event dated ahead (ts) starts its run then", async () => {
  const ts = Date.now() + 3000;
  const id = await send("test/steps", { n: 7 }, { ts });
  // Claimed at once (queued, then running for a moment), it sleeps until ts.
  const early = await runOf("sdk-test-steps", id, ["sleeping", "completed", "failed"]);
  assert.equal(early.status, "sleeping");
  const run = await runOf("sdk-test-steps", id);
  assert.equal(run.status, "completed");
  assert.ok(Math.min(...countsOf(run.id).map((c) => c.t)) >= ts - 50, "no step ran before ts");
  assert.equal(run.output.e, 191);
});

test("retries: to success, to a final error the function catches, NonRetriableError, RetryAfterError", async () => {
  const flaky = await send("test/flaky", { fail_times: 2 });
  const doomed = await send("test/doomed");
  const fatal = await send("test/fatal");
  const later = await send("test/later");

  const f = await runOf("sdk-test-flaky", flaky);
  assert.equal(f.status, "completed");
  assert.deepEqual(f.output, { succeeded_at: 2 });
  assert.deepEqual(countsOf(f.id).map((c) => c.attempt), [0, 1, 2]);
  // Each attempt's record says what the app answered.
  const history = f.steps[0].history;
  assert.equal(history.length, 3, JSON.stringify(f.steps[0]));
  assert.match(JSON.stringify(history[0].error), /attempt 0 fails \(HTTP 206\)/);

  const d = await runOf("sdk-test-doomed", doomed);
  assert.equal(d.status, "completed");
  assert.deepEqual(d.output, { caught: "always fails" });
  assert.equal(tally(d.id).boom, 2, "retries: 1 means two attempts");

  const x = await runOf("sdk-test-fatal", fatal);
  assert.equal(x.status, "failed");
  assert.match(JSON.stringify(x.error), /no point retrying/);
  assert.equal(tally(x.id).fatal, 1, "a NonRetriableError is not retried");

  const l = await runOf("sdk-test-later", later);
  assert.equal(l.status, "completed");
  const [first, second] = countsOf(l.id);
  assert.ok(second.t - first.t >= 1900, `Retry-After 2s honoured (${second.t - first.t} ms)`);
});

test("parallel steps each run once, then the function resumes with all results", async () => {
  const id = await send("test/fanout");
  const run = await runOf("sdk-test-fanout", id);
  assert.deepEqual(run.output, { joined: "XYZ" });
  assert.deepEqual(tally(run.id), { x: 1, y: 1, z: 1, join: 1 });
});

test("step.sleep is a durable sleep", async () => {
  const id = await send("test/nap");
  const sleeping = await runOf("sdk-test-napper", id, ["sleeping"]);
  assert.equal(sleeping.status, "sleeping");
  const run = await runOf("sdk-test-napper", id);
  assert.ok(run.output.slept_ms >= 1900, JSON.stringify(run.output));
  assert.equal(run.steps.find((s) => s.key === sha1("nap")).kind, "sleep");
});

test("waitForEvent: matched by its expression, or null at its timeout", async () => {
  const matched = await send("test/wait", { id: "w-1" });
  const timedOut = await send("test/wait", { id: "w-2", timeout: "1s" });
  await runOf("sdk-test-waiter", matched, ["waiting"]);
  await send("test/approved", { id: "w-other", by: "nobody" }); // matches no waiting run
  await send("test/approved", { id: "w-1", by: "ada" });
  const m = await runOf("sdk-test-waiter", matched);
  assert.deepEqual(m.output, { approved: { id: "w-1", by: "ada" } });
  const t = await runOf("sdk-test-waiter", timedOut);
  assert.deepEqual(t.output, { approved: null });
});

test("invoke both ways: SDK to SDK, SDK to native, native to SDK, and a failing child", async () => {
  const toSdk = await send("test/call", { function: "callee", payload: { n: 21 } });
  const toNative = await send("test/call", { native: "hello", payload: { name: "sdk" } });
  const failing = await send("test/call", { function: "callee", payload: { n: 1, fail: true } });
  const fromNative = await api("POST", "/api/engine/events", {
    name: "example/relay", data: { workflow: "sdk-test-callee", data: { n: 5 } } });
  assert.equal(fromNative.status, 201);

  assert.deepEqual((await runOf("sdk-test-caller", toSdk)).output,
    { result: { doubled: 42, invoked_as: "inngest/function.invoked" } });
  assert.equal((await runOf("sdk-test-caller", toNative)).output.result.greeting, "hello, sdk");
  assert.match((await runOf("sdk-test-caller", failing)).output.error, /callee refuses/);
  const relay = await runOf("relay", fromNative.body.id);
  assert.deepEqual(relay.output, { doubled: 10, invoked_as: "inngest/function.invoked" });
});

test("step.sendEvent starts another function, whose trigger expression filters events", async () => {
  const pass = await send("test/send", { name: "test/heard", data: { pass: true, n: 1 } });
  const blocked = await send("test/send", { name: "test/heard", data: { pass: false, n: 2 } });
  assert.deepEqual((await runOf("sdk-test-sender", pass)).output, { sent: 1 });
  assert.deepEqual((await runOf("sdk-test-sender", blocked)).output, { sent: 1 });
  await sleep(500);
  const { body } = await api("GET", "/api/engine/runs?workflow=sdk-test-listener&limit=1000");
  const heard = body.runs.filter((r) => r.status === "completed");
  const outputs = await Promise.all(heard.map(async (r) => (await api("GET", `/api/engine/runs/${r.id}`)).body.output));
  assert.ok(outputs.some((o) => o.heard.n === 1), "pass: true started the listener");
  assert.ok(!outputs.some((o) => o.heard.n === 2), "pass: false did not");
  // And a native send_event starts an SDK function.
  const sent = await api("POST", "/api/engine/events", {
    name: "example/relay", data: { emit: { name: "test/heard", data: { pass: true, n: 3 } } } });
  await runOf("relay", sent.body.id);
  const deadline = Date.now() + 10000;
  for (;;) {
    const runs = (await api("GET", "/api/engine/runs?workflow=sdk-test-listener&limit=1000")).body.runs;
    const outs = await Promise.all(runs.map(async (r) => (await api("GET", `/api/engine/runs/${r.id}`)).body.output));
    if (outs.some((o) => o && o.heard.n === 3)) break;
    if (Date.now() > deadline) throw new Error("a native send_event did not start the SDK function");
    await sleep(200);
  }
});

test("onFailure runs with the error when a run fails", async () => {
  const id = await send("test/break");
  const run = await runOf("sdk-test-breaker", id);
  assert.equal(run.status, "failed");
  const deadline = Date.now() + 15000;
  while (!countsOf(run.id).some((c) => c.step === "onFailure")) {
    if (Date.now() > deadline) throw new Error("the onFailure handler did not run");
    await sleep(200);
  }
  assert.match(countsOf(run.id).find((c) => c.step === "onFailure").message, /broken on purpose/);
});

test("cancelOn: a matching event cancels the run, another does not", async () => {
  const stopped = await send("test/long", { id: "L-1" });
  const kept = await send("test/long", { id: "L-2" });
  await runOf("sdk-test-cancellable", stopped, ["sleeping"]);
  await send("test/stop", { id: "L-1" });
  const s = await runOf("sdk-test-cancellable", stopped);
  assert.equal(s.status, "cancelled");
  const k = await runOf("sdk-test-cancellable", kept);
  assert.equal(k.status, "completed");
  assert.equal(tally(s.id)["after-sleep"], undefined);
  assert.equal(tally(k.id)["after-sleep"], 1);
});

test("POST /e/{key}: arrays, ids that deduplicate, reserved names, unknown keys", async () => {
  const post = async (key, body) => {
    const res = await fetch(`${cairn.base}/e/${key}`, { method: "POST", body: JSON.stringify(body) });
    return { status: res.status, body: await res.json() };
  };
  const many = await post(eventsKey, [{ name: "test/nothing", data: {} }, { name: "test/nothing" }]);
  assert.equal(many.status, 200);
  assert.equal(many.body.status, 200);
  assert.equal(many.body.ids.length, 2);
  const first = await post(eventsKey, { name: "test/steps", data: { n: 3 }, id: "order-77" });
  const again = await post(eventsKey, { name: "test/steps", data: { n: 3 }, id: "order-77" });
  assert.deepEqual(again.body.ids, first.body.ids, "the same id is the same event");
  await runOf("sdk-test-steps", first.body.ids[0]);
  const { body } = await api("GET", "/api/engine/runs?workflow=sdk-test-steps&limit=1000");
  assert.equal(body.runs.filter((r) => r.event_id === first.body.ids[0]).length, 1, "one run for both sends");
  const reserved = await post(eventsKey, { name: "inngest/function.failed", data: {} });
  assert.equal(reserved.status, 400);
  assert.match(reserved.body.error, /reserved/);
  const unknown = await post("ck_" + "0".repeat(64), { name: "test/steps" });
  assert.deepEqual(unknown, { status: 401, body: { ids: [], status: 401, error: "Event key not found" } });
  const bad = await post(eventsKey, { name: "test/steps", data: "not an object" });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.status, 400);
});

test("keys stay out of the log: a signing key is redacted, and so is /e/{key}", async () => {
  await fetch(`${cairn.base}/health?note=${signingKey}`);
  await send("test/nothing-listens");
  await sleep(300);
  const log = fs.readFileSync(path.join(work, "cairn.log"), "utf8");
  assert.match(log, /note=signkey-test-REDACTED/);
  assert.ok(!log.includes(signingKey.slice(13)), "the key's hex is not in the log");
  assert.ok(!log.includes(eventsKey), "the event key is not in the log");
  assert.match(log, /POST \/e\/REDACTED 200/);
});

test("a wrong signing key is refused in each direction", async () => {
  // Cairn refuses a registration with another key's bearer.
  const res = await fetch(`${cairn.base}/fn/register`, {
    method: "POST",
    headers: { authorization: "Bearer signkey-test-00ff", "content-type": "application/json" },
    body: JSON.stringify({ appName: "intruder", url: "http://127.0.0.1:1/x", functions: [] }),
  });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).status, 401);
  // An app with another key refuses Cairn's signed sync, and its own register is refused.
  const wrong = await startApp({ key: "signkey-test-" + "ab".repeat(32) });
  try {
    const inBand = await api("POST", "/api/engine/apps", { url: wrong.url });
    assert.equal(inBand.status, 502);
    assert.match(inBand.body.error.message, /401/);
    const put = await fetch(wrong.url, { method: "PUT" });
    assert.equal(put.status, 401, "the app's /fn/register was refused");
  } finally {
    await stop(wrong);
  }
  const listed = (await api("GET", "/api/engine/apps")).body.apps.map((a) => a.id);
  assert.deepEqual(listed, ["sdk-test"]);
});

test("an app that answers garbage or too much: failed attempts, retried, then a clear error", async () => {
  const http = await import("node:http");
  const junk = http.createServer((req, res) => {
    req.resume();
    if (req.url.startsWith("/garbage")) {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>a proxy's page</html>");
    } else {
      res.writeHead(206, { "content-type": "application/json", "x-inngest-sdk": "inngest-js:v3.38.0" });
      res.end("[" + " ".repeat(9 * 1024 * 1024) + "]");
    }
  });
  await new Promise((r) => junk.listen(0, "127.0.0.1", r));
  const port = junk.address().port;
  const fn = (id) => ({
    id: `junk-${id}`, name: id, triggers: [{ event: `junk/${id}` }],
    steps: { step: { id: "step", name: "step", retries: { attempts: 1 },
      runtime: { type: "http", url: `http://127.0.0.1:${port}/${id}?fnId=junk-${id}&stepId=step` } } },
  });
  const bearer = "signkey-test-" + crypto.createHash("sha256")
    .update(Buffer.from(signingKey.slice("signkey-test-".length), "hex")).digest("hex");
  try {
    const reg = await fetch(`${cairn.base}/fn/register`, {
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: JSON.stringify({ appName: "junk", url: `http://127.0.0.1:${port}/`, sdk: "js:v3.38.0",
        framework: "none", functions: [fn("garbage"), fn("huge")] }),
    });
    assert.equal(reg.status, 200, await reg.text());
    const garbage = await send("junk/garbage");
    const huge = await send("junk/huge");
    const g = await runOf("junk-garbage", garbage);
    assert.equal(g.status, "failed");
    assert.match(JSON.stringify(g.error), /not an Inngest SDK's answer/);
    assert.equal(g.steps[0].attempts, 2, "retries: 1 means two attempts");
    const h = await runOf("junk-huge", huge);
    assert.equal(h.status, "failed");
    assert.match(JSON.stringify(h.error), /over 8388608 bytes/);
    assert.equal((await fetch(`${cairn.base}/health`)).status, 200, "cairn is still up");
  } finally {
    junk.close();
    await api("DELETE", "/api/engine/apps/junk");
  }
});

test("the app killed mid-step and restarted: recorded steps do not run again", async () => {
  const id = await send("test/steps", { n: 2, slow_ms: 1500 });
  const { id: runId } = await runOf("sdk-test-steps", id, ["running"]);
  const deadline = Date.now() + 10000;
  while (!countsOf(runId).some((c) => c.step === "c")) {  // step c is under way
    if (Date.now() > deadline) throw new Error("step c never started");
    await sleep(50);
  }
  await stop(app, "SIGKILL");
  await sleep(1000);
  app = await startApp({ port: app.port });
  const run = await runOf("sdk-test-steps", id, ["completed", "failed"], 60000);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.output, { a: 3, b: 6, c: 9, d: 90, e: 91 });
  const t = tally(run.id);
  assert.equal(t.a, 1);
  assert.equal(t.b, 1);
  assert.ok(t.c >= 2, "step c ran again: its result was never recorded");
  assert.equal(t.d, 1);
});

test("kill -9 of cairn with 200 runs in flight: all complete, no recorded step runs again", async () => {
  const events = Array.from({ length: 200 }, (_, i) => ({ name: "test/steps", data: { n: 1000 + i } }));
  const res = await fetch(`${cairn.base}/e/${eventsKey}`, { method: "POST", body: JSON.stringify(events) });
  const { ids } = await res.json();
  assert.equal(ids.length, 200);
  const deadline = Date.now() + 30000;
  while (!fs.readFileSync(counts, "utf8").includes('"step":"c"') ||
         fs.readFileSync(counts, "utf8").split("\n").filter((l) => l.includes("\"step\":\"e\"")).length < 20) {
    if (Date.now() > deadline) throw new Error("the runs did not start");
    await sleep(20);
  }
  await stop(cairn, "SIGKILL");
  const crashedAt = Date.now();
  cairn = await startCairn();
  for (const id of ids) {
    const run = await runOf("sdk-test-steps", id, ["completed", "failed"], 120000);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    const n = 1000 + ids.indexOf(id);
    assert.deepEqual(run.output, { a: n + 1, b: (n + 1) * 2, c: (n + 1) * 2 + 3, d: ((n + 1) * 2 + 3) * 10, e: ((n + 1) * 2 + 3) * 10 + 1 });
    // A step executed after the crash must be one whose result was recorded after it.
    for (const c of countsOf(run.id)) {
      if (c.t < crashedAt) continue;
      const step = run.steps.find((s) => s.key === sha1(c.step));
      assert.ok(Date.parse(step.ended_at) >= crashedAt - 5,
        `run ${run.id}: step ${c.step}, recorded at ${step.ended_at}, ran again after the crash`);
    }
  }
});

test("a re-sync that removes a function: no new runs, its running runs fail", async () => {
  const id = await send("test/long", { id: "R-1" });
  await runOf("sdk-test-cancellable", id, ["sleeping"]);
  await stop(app);
  app = await startApp({ port: app.port, functions: "steps,callee" });
  const synced = await sync(app.url);
  assert.deepEqual(synced.functions.map((f) => f.id).sort(), ["sdk-test-callee", "sdk-test-steps"]);
  const run = await runOf("sdk-test-cancellable", id);
  assert.equal(run.status, "failed");
  assert.match(JSON.stringify(run.error), /removed from app 'sdk-test'/);
  const late = await send("test/long", { id: "R-2" });
  await sleep(500);
  const { body } = await api("GET", "/api/engine/runs?workflow=sdk-test-cancellable&limit=1000");
  assert.ok(!body.runs.some((r) => r.event_id === late), "a removed function starts no run");
  const wf = (await api("GET", "/api/engine/workflows")).body.workflows.map((w) => w.id);
  assert.ok(wf.includes("sdk-test-steps"));
});
