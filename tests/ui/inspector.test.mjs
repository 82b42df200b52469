// The workflow inspector end to end: a real `cairn serve` with real runs, driven in
// Debian's Chromium by playwright-core. Run by run.sh (CTest: ui.inspector).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cairn = process.env.CAIRN_BIN;
const artifacts = process.env.CAIRN_UI_ARTIFACTS || join(process.cwd(), 'ui-artifacts');
const work = mkdtempSync(join(tmpdir(), 'cairn-ui-'));
const db = `sqlite://${join(work, 'ui.db')}`;
let server, base, key, browser, page;

async function api(path, body) {
  const res = await fetch(`${base}/api/engine/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(res.ok, `${path}: HTTP ${res.status}`);
  return res.json();
}

async function waitForStatus(runId, status, seconds = 15) {
  for (let i = 0; i < seconds * 10; ++i) {
    if ((await api(`runs/${runId}`)).status === status) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`run ${runId} did not become ${status}`);
}

before(async () => {
  assert.ok(cairn, 'CAIRN_BIN must point at the cairn binary');
  key = execFileSync(cairn, ['keys', 'create', '--name', 'ui-test', '--db', db], { stdio: ['ignore', 'pipe', 'ignore'] })
    .toString().trim();
  server = spawn(cairn, ['serve', '--examples', '--listen', '127.0.0.1:0', '--db', db],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CAIRN_EXAMPLE_CRON: 'TZ=Europe/Paris 0 3 * * *' } });
  base = await new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 15000);
    server.stderr.on('data', (chunk) => {
      log += chunk;
      const m = log.match(/serving (http:\/\/[0-9.:]+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('dialog', (d) => d.accept());
  // Nothing may leave the machine: fail on any request that is not to the server.
  page.on('request', (r) => assert.ok(r.url().startsWith(base) || r.url().startsWith('data:'), `external request: ${r.url()}`));
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
});

test('sign-in is refused with a wrong key and nothing is shown', async () => {
  await page.goto(`${base}/inspector/`);
  await page.fill('#api-key', 'ck_wrong');
  await page.click('button[type=submit]');
  await page.waitForSelector('#signin-error:not([hidden])');
  assert.match(await page.textContent('#signin-error'), /not accepted/);
  assert.equal(await page.locator('#runs').count(), 0);
});

test('the runs list shows a run started by a test event', async () => {
  const sent = await api('events', { name: 'example/hello', data: { name: 'list' } });
  await page.fill('#api-key', key);
  await page.click('button[type=submit]');
  const row = page.locator(`tr[data-run-id="${sent.run_ids[0]}"]`);
  await row.waitFor();
  assert.equal(await row.locator('td').nth(2).textContent(), 'hello');
});

test('a new run appears live, without a reload', async () => {
  await page.evaluate(() => { window.__noReload = true; });
  const sent = await api('events', { name: 'example/hello', data: { name: 'live' } });
  const row = page.locator(`tr[data-run-id="${sent.run_ids[0]}"]`);
  await row.waitFor({ timeout: 5000 });
  await row.locator('[data-status="completed"]').waitFor({ timeout: 5000 });
  assert.equal(await page.evaluate(() => window.__noReload), true);
});

test('a failed run shows its error; Retry makes it complete', async () => {
  const failUntil = Date.now() + 2000;
  const sent = await api('events', { name: 'example/flaky', data: { fail_until_ms: failUntil } });
  const runId = sent.run_ids[0];
  await waitForStatus(runId, 'failed');
  await page.goto(`${base}/inspector/#/runs/${runId}`);
  await page.locator('#run-status [data-status="failed"]').waitFor();
  const attemptError = page.locator('[data-step-key="call-service"] .attempt-error');
  assert.match(await attemptError.first().textContent(), /service unavailable/);
  mkdirSync(artifacts, { recursive: true });
  const shot = join(artifacts, 'run-detail.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10000);
  await new Promise((r) => setTimeout(r, Math.max(0, failUntil - Date.now() + 200)));
  await page.click('#btn-retry');
  await page.locator('#run-status [data-status="completed"]').waitFor({ timeout: 10000 });
});

test('Replay from a step creates a new run', async () => {
  const sent = await api('events', { name: 'example/hello', data: { name: 'replay' } });
  const runId = sent.run_ids[0];
  await waitForStatus(runId, 'completed');
  await page.goto(`${base}/inspector/#/runs/${runId}`);
  await page.locator('[data-step-key="shout"] .replay-from').click();
  const link = page.locator('#action-result a.new-run');
  await link.waitFor();
  const newId = await link.textContent();
  assert.notEqual(newId, runId);
  await link.click();
  await page.waitForFunction((id) => location.hash === `#/runs/${id}`, newId);
  await page.locator('#run-status [data-status="completed"]').waitFor({ timeout: 10000 });
  const replayed = await api(`runs/${newId}`);
  assert.equal(replayed.replay_of, runId);
});

test('a filter in the URL survives a reload', async () => {
  await page.goto(`${base}/inspector/#/runs?status=failed`);
  await page.waitForSelector('#runs');
  assert.equal(await page.inputValue('#f-status'), 'failed');
  await page.reload();
  await page.waitForSelector('#runs');
  assert.equal(await page.inputValue('#f-status'), 'failed');
  const statuses = await page.locator('#runs-body [data-status]').allTextContents();
  assert.ok(statuses.every((s) => s === 'failed'), statuses.join(','));
  await page.selectOption('#f-status', 'completed');
  await page.waitForFunction(() => location.hash.includes('status=completed'));
});

test('a slower, older navigation never overwrites a newer page', async () => {
  await page.goto(`${base}/inspector/#/events`);
  await page.waitForSelector('#events');
  // Make the runs page slow to load, open it, and move on to Workflows before it arrives.
  const slowRuns = /\/api\/engine\/runs\?/;
  await page.route(slowRuns, async (route) => {
    await new Promise((r) => setTimeout(r, 800));
    await route.continue();
  });
  await page.evaluate(() => { location.hash = '#/runs?status=completed'; });
  await new Promise((r) => setTimeout(r, 100));
  await page.evaluate(() => { location.hash = '#/workflows'; });
  await page.locator('[data-workflow="hello"]').waitFor();
  await new Promise((r) => setTimeout(r, 1200));  // the runs response has arrived by now
  await page.unroute(slowRuns);
  assert.equal(await page.locator('#runs').count(), 0);
  assert.equal(await page.locator('[data-workflow="hello"]').count(), 1);
});

test('workflows and events pages, and the test-event form validates JSON first', async () => {
  await page.goto(`${base}/inspector/#/workflows`);
  await page.locator('[data-workflow="hello"]').waitFor();
  assert.match(await page.locator('[data-workflow="hello"]').textContent(), /p50/);
  // The server's own process, listed in the processes table, runs it.
  assert.equal(await page.locator('[data-workflow="hello"] .processes').textContent(), 'Executed by: cairn');
  await page.goto(`${base}/inspector/#/events`);
  await page.waitForSelector('#events');
  await page.fill('#event-name', 'example/hello');
  await page.fill('#event-data', '{"name": ');
  await page.click('form.stack button[type=submit]');
  assert.match(await page.textContent('#send-result'), /not valid JSON/);
  await page.fill('#event-data', '{"name": "form"}');
  await page.click('form.stack button[type=submit]');
  await page.locator('#send-result a.new-run').waitFor();
});

test('flow control: a workflow\'s controls, and why a queued run waits', async () => {
  await page.goto(`${base}/inspector/#/workflows`);
  await page.locator('[data-workflow="limited"]').waitFor();
  assert.equal(await page.locator('[data-workflow="limited"] .flow').textContent(),
    'Flow control: concurrency 2 per event.data.customer');
  const ids = [];
  for (let i = 0; i < 3; i++)
    ids.push((await api('events', { name: 'example/limited', data: { customer: 'ui', work_ms: 3000 } })).run_ids[0]);
  let parked;
  for (let i = 0; i < 100 && !parked; i++) {
    for (const id of ids) if ((await api(`runs/${id}`)).held?.reason === 'concurrency') parked = id;
    if (!parked) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(parked, 'one of three runs waits for a slot');
  await page.goto(`${base}/inspector/#/runs/${parked}`);
  assert.equal(await page.locator('#run-held').textContent(), 'queued: concurrency 2/2 for customer=ui');
  for (const id of ids) await waitForStatus(id, 'completed');
});

test('pause, bulk cancel of every matching run, resume; schedules and retention shown', async () => {
  await page.goto(`${base}/inspector/#/workflows`);
  await page.locator('[data-workflow="hello"]').waitFor();
  assert.match(await page.textContent('#retention'), /30 days/);
  assert.match(await page.locator('[data-workflow="tick"] .schedule').textContent(), /TZ=Europe\/Paris 0 3 \* \* \* · next tick/);
  await page.locator('[data-workflow="hello"] .pause-toggle').click();
  await page.locator('[data-workflow="hello"][data-paused="true"]').waitFor();
  const held = [];
  for (const name of ['p1', 'p2']) held.push((await api('events', { name: 'example/hello', data: { name } })).run_ids[0]);
  await new Promise((r) => setTimeout(r, 500));
  for (const id of held) assert.equal((await api(`runs/${id}`)).status, 'queued');

  await page.goto(`${base}/inspector/#/runs?workflow=hello&status=queued`);
  await page.locator(`tr[data-run-id="${held[1]}"]`).waitFor();
  await page.selectOption('#bulk-op', 'cancel');
  await page.click('#bulk-matching');
  await page.waitForFunction(() => /cancelled 2 of 2 matching/.test(document.querySelector('#bulk-result')?.textContent || ''));
  for (const id of held) assert.equal((await api(`runs/${id}`)).status, 'cancelled');

  // Retry one of them by selection, then resume: it runs.
  await page.goto(`${base}/inspector/#/runs?workflow=hello&status=cancelled`);
  await page.locator(`tr[data-run-id="${held[0]}"] input.pick`).check();
  await page.selectOption('#bulk-op', 'retry');
  await page.click('#bulk-selected');
  await page.waitForFunction(() => /retried 1 of 1/.test(document.querySelector('#bulk-result')?.textContent || ''));
  await page.goto(`${base}/inspector/#/workflows`);
  await page.locator('[data-workflow="hello"][data-paused="true"] .pause-toggle').click();
  await page.locator('[data-workflow="hello"][data-paused="false"]').waitFor();
  await waitForStatus(held[0], 'completed');
  assert.equal((await api(`runs/${held[1]}`)).status, 'cancelled');
});

test('Replay with edited data runs the new data', async () => {
  const sent = await api('events', { name: 'example/hello', data: { name: 'orig' } });
  await waitForStatus(sent.run_ids[0], 'completed');
  await page.goto(`${base}/inspector/#/runs/${sent.run_ids[0]}`);
  await page.locator('summary', { hasText: 'Replay with edited data' }).click();
  await page.fill('#replay-data', '{');
  await page.click('#btn-replay-data');
  await page.waitForFunction(() => /not valid JSON/.test(document.querySelector('#action-result')?.textContent || ''));
  await page.fill('#replay-data', '{"name": "edited"}');
  await page.click('#btn-replay-data');
  const link = page.locator('#action-result a.new-run');
  await link.waitFor();
  const replay = await link.textContent();
  await waitForStatus(replay, 'completed');
  const run = await api(`runs/${replay}`);
  assert.equal(run.output.greeting, 'hello, edited');
  assert.equal(run.replay_of, sent.run_ids[0]);
});

test('phone width and sign-out', async () => {
  await page.setViewportSize({ width: 390, height: 800 });
  await page.goto(`${base}/inspector/#/runs`);
  await page.waitForSelector('#runs');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `page is ${overflow}px wider than a phone screen`);
  await page.click('#signout');
  await page.waitForSelector('#api-key');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('cairn.api_key')), null);
});
