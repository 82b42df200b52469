// The engine benchmark's workload on DBOS Transact: a workflow of 5 no-op steps, each step
// checkpointed in DBOS's system database (Postgres). Prints one JSON line.
//
//   node bench.js latency N      one workflow at a time, N times after 20 warm-ups:
//                                p50/p99 from start to result
//   node bench.js throughput N   N workflows, 64 in flight: workflows/s
//
// DBOS_SYSTEM_DATABASE_URL names the database. Started with DBOS.startWorkflow, each
// workflow runs in this process at once, as cairn_bench's latency driver executes its run
// on the calling thread.
"use strict";
const { DBOS } = require("@dbos-inc/dbos-sdk");

const [mode, count] = [process.argv[2], Number(process.argv[3] || 1000)];
if (!["latency", "throughput"].includes(mode) || !(count > 0)) {
  console.error("usage: node bench.js latency|throughput N");
  process.exit(2);
}

async function noop() {
  return 1;
}
async function fiveSteps() {
  for (let i = 0; i < 5; i++) await DBOS.runStep(noop, { name: `step-${i}` });
  return 5;
}
const workflow = DBOS.registerWorkflow(fiveSteps, { name: "five-steps" });
const once = async () => (await DBOS.startWorkflow(workflow)()).getResult();
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

async function main() {
  DBOS.setConfig({
    name: "cairn-peer-bench",
    systemDatabaseUrl: process.env.DBOS_SYSTEM_DATABASE_URL,
    logLevel: "error",
  });
  await DBOS.launch();
  for (let i = 0; i < 20; i++) await once();
  let out;
  if (mode === "latency") {
    const times = [];
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint();
      await once();
      times.push(ms(t0));
    }
    times.sort((a, b) => a - b);
    const at = (q) => times[Math.min(times.length - 1, Math.floor(times.length * q))];
    out = { mode, runs: count, p50_ms: at(0.5), p99_ms: at(0.99) };
  } else {
    let started = 0;
    const lane = async () => {
      while (started < count) {
        started++;
        await once();
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: 64 }, lane));
    const seconds = ms(t0) / 1000;
    out = { mode, runs: count, in_flight: 64, seconds, runs_per_s: count / seconds };
  }
  await DBOS.shutdown();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
