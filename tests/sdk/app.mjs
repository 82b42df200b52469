// An Inngest SDK app (the real `inngest` package, served by Express) whose functions
// exercise every opcode Cairn handles. Each step body appends a line to $COUNTS, so a
// test can tell how often a step really ran, across restarts of this app.
//   PORT, APP_ID, COUNTS, and the SDK's own INNGEST_* variables.
import fs from "node:fs";
import express from "express";
import { Inngest, NonRetriableError, RetryAfterError, referenceFunction } from "inngest";
import { serve } from "inngest/express";

const appId = process.env.APP_ID || "sdk-test";
const inngest = new Inngest({ id: appId });
const counts = process.env.COUNTS || "/dev/null";
const count = (run, step, extra = {}) =>
  fs.appendFileSync(counts, JSON.stringify({ run, step, t: Date.now(), ...extra }) + "\n");
const only = new Set((process.env.FUNCTIONS || "").split(",").filter(Boolean));

const all = [
  inngest.createFunction({ id: "steps" }, { event: "test/steps" }, async ({ event, step, runId }) => {
    const a = await step.run("a", () => { count(runId, "a"); return event.data.n + 1; });
    const b = await step.run("b", () => { count(runId, "b"); return a * 2; });
    const c = await step.run("c", async () => {
      count(runId, "c");
      if (event.data.slow_ms) await new Promise((r) => setTimeout(r, event.data.slow_ms));
      return b + 3;
    });
    const d = await step.run("d", () => { count(runId, "d"); return c * 10; });
    const e = await step.run("e", () => { count(runId, "e"); return d + 1; });
    return { a, b, c, d, e };
  }),
  inngest.createFunction({ id: "flaky", retries: 3 }, { event: "test/flaky" },
    async ({ event, step, runId, attempt }) => {
      const v = await step.run("try", () => {
        count(runId, "try", { attempt });
        if (attempt < event.data.fail_times) throw new Error(`attempt ${attempt} fails`);
        return attempt;
      });
      return { succeeded_at: v };
    }),
  inngest.createFunction({ id: "doomed", retries: 1 }, { event: "test/doomed" }, async ({ step, runId }) => {
    try {
      await step.run("boom", () => { count(runId, "boom"); throw new Error("always fails"); });
    } catch (e) {
      return { caught: e.message };
    }
    return "not reached";
  }),
  inngest.createFunction({ id: "fatal", retries: 3 }, { event: "test/fatal" }, async ({ step, runId }) => {
    await step.run("fatal", () => { count(runId, "fatal"); throw new NonRetriableError("no point retrying"); });
    return "not reached";
  }),
  inngest.createFunction({ id: "later", retries: 2 }, { event: "test/later" }, async ({ step, runId, attempt }) => {
    const at = await step.run("later", () => {
      count(runId, "later", { attempt });
      if (attempt === 0) throw new RetryAfterError("busy, come back later", "2s");
      return Date.now();
    });
    return { at };
  }),
  inngest.createFunction({ id: "fanout" }, { event: "test/fanout" }, async ({ step, runId }) => {
    const [x, y, z] = await Promise.all(
      ["x", "y", "z"].map((k) => step.run(k, () => { count(runId, k); return k.toUpperCase(); })));
    const joined = await step.run("join", () => { count(runId, "join"); return x + y + z; });
    return { joined };
  }),
  inngest.createFunction({ id: "napper" }, { event: "test/nap" }, async ({ step }) => {
    const before = await step.run("before", () => Date.now());
    await step.sleep("nap", "2s");
    const after = await step.run("after", () => Date.now());
    return { slept_ms: after - before };
  }),
  inngest.createFunction({ id: "waiter" }, { event: "test/wait" }, async ({ event, step }) => {
    const ev = await step.waitForEvent("approval", {
      event: "test/approved", timeout: event.data.timeout || "30s", match: "data.id" });
    return { approved: ev ? ev.data : null };
  }),
  inngest.createFunction({ id: "caller" }, { event: "test/call" }, async ({ event, step }) => {
    const target = event.data.native
      ? event.data.native
      : referenceFunction({ appId, functionId: event.data.function });
    try {
      return { result: await step.invoke("call", { function: target, data: event.data.payload }) };
    } catch (e) {
      return { error: e.message };
    }
  }),
  inngest.createFunction({ id: "callee" }, { event: "test/callee" }, async ({ event, step }) => {
    const doubled = await step.run("double", () => (event.data.n || 0) * 2);
    if (event.data.fail) throw new NonRetriableError("callee refuses");
    return { doubled, invoked_as: event.name };
  }),
  inngest.createFunction({ id: "sender" }, { event: "test/send" }, async ({ event, step }) => {
    const sent = await step.sendEvent("emit", { name: event.data.name, data: event.data.data });
    return { sent: sent.ids.length };
  }),
  inngest.createFunction({ id: "listener" }, { event: "test/heard", if: "event.data.pass == true" },
    async ({ event, step, runId }) => {
      await step.run("heard", () => count(runId, "heard", { data: event.data }));
      return { heard: event.data };
    }),
  inngest.createFunction(
    {
      id: "breaker", retries: 0,
      onFailure: async ({ event, error, step }) => {
        await step.run("note", () => count(event.data.run_id, "onFailure", { message: error.message }));
      },
    },
    { event: "test/break" },
    async ({ step }) => {
      await step.run("x", () => { throw new NonRetriableError("broken on purpose"); });
    }),
  inngest.createFunction(
    { id: "cancellable", cancelOn: [{ event: "test/stop", match: "data.id" }] },
    { event: "test/long" },
    async ({ step, runId }) => {
      await step.sleep("wait", "4s");
      await step.run("after", () => count(runId, "after-sleep"));
      return "finished";
    }),
  inngest.createFunction({ id: "wild" }, { event: "test/wild.*" }, async ({ event, step }) => {
    return await step.run("name", () => event.name);
  }),
  // Flow control from the function's config: one run per key at a time (each step notes
  // when it began and ended), a batch of three, one run per key per hour.
  inngest.createFunction({ id: "limited", concurrency: { limit: 1, key: "event.data.k" } },
    { event: "test/limited" }, async ({ event, step, runId }) => {
      return await step.run("work", async () => {
        const began = Date.now();
        await new Promise((r) => setTimeout(r, 150));
        count(runId, "work", { k: event.data.k, began, ended: Date.now() });
        return event.data.k;
      });
    }),
  inngest.createFunction({ id: "batched", batchEvents: { maxSize: 3, timeout: "5s" } },
    { event: "test/batched" }, async ({ events }) => events.map((e) => e.data.n)),
  inngest.createFunction({ id: "once", rateLimit: { limit: 1, period: "1h", key: "event.data.k" } },
    { event: "test/once" }, async ({ event }) => event.data.k),
  // Every end of a run of "steps" started by an event with data.watch, as Cairn announces it.
  inngest.createFunction(
    { id: "ends" },
    ["inngest/function.finished", "inngest/function.cancelled"].map((name) => ({
      event: name,
      if: `event.data.function_id == '${appId}-steps' && event.data.event.data.watch == true`,
    })),
    async ({ event, step }) => {
      await step.run("note", () => count(`ends/${event.data.run_id}`, event.name, {
        status: event.data._inngest?.status, result: event.data.result ?? null }));
    }),
];

const functions = only.size ? all.filter((f) => only.has(f.id(appId).slice(appId.length + 1))) : all;
const app = express();
app.use(express.json({ limit: "10mb" }));
app.use("/api/inngest", serve({ client: inngest, functions }));
const server = app.listen(Number(process.env.PORT || 3000), "127.0.0.1", () => {
  console.log(`sdk app ${appId} on http://127.0.0.1:${server.address().port}/api/inngest`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
