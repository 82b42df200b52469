// The app bench/run sdk measures: one function of five trivial steps, as the native
// `bench` workflow of cairn_bench. PORT (0: any), and the SDK's INNGEST_* variables.
import express from "express";
import { Inngest } from "inngest";
import { serve } from "inngest/express";

const inngest = new Inngest({ id: "bench" });
const steps = inngest.createFunction({ id: "steps" }, { event: "bench/sdk" }, async ({ step }) => {
  let last = 0;
  for (let i = 0; i < 5; ++i) last = await step.run(`step-${i}`, () => i);
  return last;
});
const app = express();
app.use(express.json({ limit: "4mb" }));
app.use("/api/inngest", serve({ client: inngest, functions: [steps] }));
const server = app.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`bench app on http://127.0.0.1:${server.address().port}/api/inngest`);
});
