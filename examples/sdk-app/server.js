// The seed backends' two background flows as Inngest functions, unchanged but for where
// they point: run with INNGEST_DEV=http://127.0.0.1:8080 against `cairn serve --dev`, or in
// signed mode (README.md here).
import express from "express";
import { Inngest } from "inngest";
import { serve } from "inngest/express";

const inngest = new Inngest({ id: "helpdesk" });

const moderators = [
  { email: "ada@example.com", skills: ["react", "javascript", "css"] },
  { email: "grace@example.com", skills: ["postgresql", "node", "devops"] },
  { email: "linus@example.com", skills: ["linux", "networking", "c"] },
];

// A stand-in for the seeds' AI call: keywords decide priority and the skills needed.
function analyse(ticket) {
  const text = `${ticket.title} ${ticket.description}`.toLowerCase();
  const skills = [...new Set(moderators.flatMap((m) => m.skills).filter((s) => text.includes(s)))];
  const priority = /urgent|down|outage|broken/.test(text) ? "high" : skills.length ? "medium" : "low";
  return { priority, skills, summary: ticket.title.slice(0, 80) };
}

const userSignup = inngest.createFunction(
  { id: "user-signup", retries: 2 },
  { event: "user/signup" },
  async ({ event, step }) => {
    const email = event.data.email;
    await step.run("send-welcome-email", async () => {
      console.log(`welcome mail to ${email}`);
      return { to: email };
    });
    return { welcomed: email };
  },
);

const ticketCreated = inngest.createFunction(
  { id: "ticket-created", retries: 2 },
  { event: "ticket/created" },
  async ({ event, step }) => {
    const ticket = event.data;
    const analysis = await step.run("analyze-ticket", () => analyse(ticket));
    const moderator = await step.run("assign-moderator", () => {
      const score = (m) => m.skills.filter((s) => analysis.skills.includes(s)).length;
      return [...moderators].sort((a, b) => score(b) - score(a))[0];
    });
    await step.sendEvent("announce", {
      name: "ticket/assigned",
      data: { ticket_id: ticket.id, moderator: moderator.email, priority: analysis.priority },
    });
    await step.run("email-moderator", async () => {
      console.log(`ticket ${ticket.id} assigned to ${moderator.email} (${analysis.priority})`);
      return { to: moderator.email };
    });
    return { ...analysis, assigned_to: moderator.email };
  },
);

const app = express();
app.use(express.json({ limit: "4mb" }));
app.use("/api/inngest", serve({ client: inngest, functions: [userSignup, ticketCreated] }));
const port = Number(process.env.PORT || 3000);
app.listen(port, () => console.log(`helpdesk app on http://127.0.0.1:${port}/api/inngest`));
