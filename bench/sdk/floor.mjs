// The protocol alone: a node:http server answering as the SDK does for app.mjs's function
// (five steps, each run by the request that reaches it, then the result), with no SDK, no
// Express and no signatures (dev mode). bench/run sdk drives Cairn against it to show the
// protocol's cost on Cairn's side apart from the SDK's own. PORT (0: any).
import crypto from "node:crypto";
import http from "node:http";

const ids = [0, 1, 2, 3, 4].map((i) => crypto.createHash("sha1").update(`step-${i}`).digest("hex"));
const headers = { "content-type": "application/json", "x-inngest-sdk": "floor:v1" };

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const url = `http://127.0.0.1:${server.address().port}/api/inngest`;
    const answer = (status, value, extra = {}) => {
      res.writeHead(status, { ...headers, ...extra });
      res.end(JSON.stringify(value));
    };
    if (req.method === "PUT") {
      return answer(200, {
        app_id: "bench", url, sdk: "floor:v1", framework: "node",
        functions: [{
          id: "bench-steps", name: "steps", triggers: [{ event: "bench/sdk" }],
          steps: { step: { id: "step", name: "step",
            runtime: { type: "http", url: `${url}?fnId=bench-steps&stepId=step` } } },
        }],
      }, { "x-inngest-sync-kind": "in_band" });
    }
    const { steps } = JSON.parse(body);
    const next = ids.findIndex((id) => !(id in steps));
    if (next < 0) return answer(200, steps[ids[4]].data);
    answer(206, [{ op: "StepRun", id: ids[next], name: `step-${next}`, displayName: `step-${next}`, data: next }]);
  });
});
server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`floor app on http://127.0.0.1:${server.address().port}/api/inngest`);
});
