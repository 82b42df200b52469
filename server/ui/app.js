// Cairn inspector: a small single-page app over the engine API (/api/engine/). No build
// step and no dependencies. Every value from the server is inserted as text, never HTML.

const KEY_STORE = 'cairn.api_key';
const main = document.getElementById('main');
const nav = document.getElementById('nav');
let leaveView = () => {};  // cleanup of the current view (streams, timers)
// Each navigation starts a new generation; a render that awaited past a newer navigation
// is stale and must not touch the page.
let generation = 0;
class Stale extends Error {}
function current(gen) {
  if (gen !== generation) throw new Stale();
}

// ---- helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const key = () => sessionStorage.getItem(KEY_STORE);
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '–');
const fmtMs = (ms) => (ms === null || ms === undefined ? '–' : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`);
const badge = (status) => h('span', { class: `badge s-${status}`, 'data-status': status }, status);
const pretty = (v) => JSON.stringify(v, null, 2);

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const res = await fetch(`/api/engine/${path}`, {
    method,
    headers: { Authorization: `Bearer ${key()}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const data = await res.json().catch(() => null);
  if (res.status === 401) {
    signOut('Your API key was not accepted. Sign in again.');
    throw new ApiError(401, data);
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// Server-sent events over fetch (EventSource cannot send the Authorization header).
// Calls onRun(run) for each change; reconnects with Last-Event-ID until stopped.
function streamRuns(onRun) {
  const control = new AbortController();
  let lastId = null;
  (async () => {
    while (!control.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${key()}` };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const res = await fetch('/api/engine/stream', { headers, signal: control.signal });
        if (!res.ok) throw new Error(`stream: HTTP ${res.status}`);
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let event = 'message', data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('id:')) lastId = line.slice(3).trim();
              else if (line.startsWith('event:')) event = line.slice(6).trim();
              else if (line.startsWith('data:')) data += line.slice(5).trim();
            }
            if (event === 'run' && data) onRun(JSON.parse(data));
          }
        }
      } catch (e) {
        if (control.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return () => control.abort();
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/runs';
  const [path, query = ''] = raw.split('?');
  return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(query) };
}

function setHashParams(base, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const next = `#${base}${q.toString() ? `?${q}` : ''}`;
  if (location.hash !== next) location.hash = next;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function notice(text, error = false, attrs = {}) {
  return h('p', { class: `notice${error ? ' error' : ''}`, role: error ? 'alert' : 'status', ...attrs }, text);
}

// ---- sign in --------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  nav.hidden = true;
  renderSignIn(message);
}

function renderSignIn(message) {
  leaveView();
  nav.hidden = true;
  const input = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', required: true, placeholder: 'ck_…' });
  const error = h('p', { id: 'signin-error', class: 'notice error', role: 'alert', hidden: !message }, message || '');
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    const candidate = input.value.trim();
    const res = await fetch('/api/engine/workflows', { headers: { Authorization: `Bearer ${candidate}` } }).catch(() => null);
    if (!res || !res.ok) {
      error.textContent = res && res.status === 403
        ? 'This key may only send events; the inspector needs an admin key.'
        : 'That key was not accepted.';
      error.hidden = false;
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY_STORE, candidate);
    route();
  } },
  h('label', { for: 'api-key' }, 'API key (create one with ', h('code', {}, 'cairn keys create --name NAME'), ')'),
  input, h('button', { class: 'primary', type: 'submit' }, 'Sign in'), error);
  show(h('section', { class: 'signin' }, h('h1', {}, 'Sign in to the inspector'), form));
  input.focus();
}

// ---- runs list ------------------------------------------------------------------------------

const STATUSES = ['queued', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled'];

function runMatches(run, f) {
  if (f.status && run.status !== f.status) return false;
  if (f.workflow && run.workflow_id !== f.workflow) return false;
  if (f.event && run.event_name !== f.event) return false;
  if (f.q && !run.id.startsWith(f.q) && !run.event_id.startsWith(f.q)) return false;
  const created = Date.parse(run.created_at);
  if (f.from && created < Date.parse(f.from)) return false;
  if (f.to && created >= Date.parse(f.to)) return false;
  return true;
}

function runRow(run) {
  const attempts = run.attempt ? `${run.attempt + 1}` : '1';
  return h('tr', { dataset: { runId: run.id } },
    h('td', {}, h('input', { type: 'checkbox', class: 'pick', 'aria-label': `Select run ${run.id}`, value: run.id })),
    h('td', {}, badge(run.status)),
    h('td', {}, run.workflow_id),
    h('td', {}, run.event_name),
    h('td', {}, fmtTime(run.started_at || run.created_at)),
    h('td', {}, fmtMs(run.duration_ms)),
    h('td', {}, attempts),
    h('td', { class: 'id' }, h('a', { href: `#/runs/${run.id}` }, run.id)));
}

async function renderRuns(params, gen) {
  const f = Object.fromEntries(['status', 'workflow', 'event', 'q', 'from', 'to', 'cursor'].map((k) => [k, params.get(k) || '']));
  const workflows = await api('workflows').catch(() => ({ workflows: [] }));
  current(gen);
  const field = (name, label, control) => h('label', {}, label, control);
  const statusSel = h('select', { id: 'f-status', name: 'status' }, h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: f.status === s }, s)));
  const workflowSel = h('select', { id: 'f-workflow', name: 'workflow' }, h('option', { value: '' }, 'any'),
    workflows.workflows.map((w) => h('option', { value: w.id, selected: f.workflow === w.id }, w.id)));
  const eventIn = h('input', { id: 'f-event', name: 'event', value: f.event, placeholder: 'e.g. ticket/created' });
  const fromIn = h('input', { id: 'f-from', name: 'from', type: 'datetime-local', value: f.from ? toLocalInput(f.from) : '' });
  const toIn = h('input', { id: 'f-to', name: 'to', type: 'datetime-local', value: f.to ? toLocalInput(f.to) : '' });
  const qIn = h('input', { id: 'f-q', name: 'q', value: f.q, placeholder: 'run or event id', type: 'search' });
  const apply = (e) => {
    e?.preventDefault();
    setHashParams('/runs', {
      status: statusSel.value, workflow: workflowSel.value, event: eventIn.value.trim(), q: qIn.value.trim(),
      from: fromIn.value ? new Date(fromIn.value).toISOString() : '', to: toIn.value ? new Date(toIn.value).toISOString() : '',
    });
  };
  for (const c of [statusSel, workflowSel, fromIn, toIn]) c.addEventListener('change', apply);
  const form = h('form', { class: 'filters', onsubmit: apply, 'aria-label': 'Filters' },
    field('status', 'Status', statusSel), field('workflow', 'Workflow', workflowSel), field('event', 'Event name', eventIn),
    field('from', 'Created from', fromIn), field('to', 'Created before', toIn), field('q', 'Search', qIn),
    h('button', { type: 'submit' }, 'Apply'));

  const query = new URLSearchParams({ limit: '50' });
  for (const k of ['status', 'workflow', 'event', 'q', 'from', 'to', 'cursor']) if (f[k]) query.set(k, f[k]);
  const page = await api(`runs?${query}`);
  current(gen);
  const tbody = h('tbody', { id: 'runs-body' }, page.runs.map(runRow));
  const empty = notice('No runs match.', false, { id: 'runs-empty', hidden: page.runs.length > 0 });
  const pager = h('div', { class: 'pager' },
    f.cursor ? h('button', { type: 'button', onclick: () => history.back() }, 'Newer') : null,
    page.next_cursor ? h('button', { type: 'button', onclick: () => setHashParams('/runs', { ...f, cursor: page.next_cursor }) }, 'Older') : null);
  show(h('h1', {}, 'Runs'), form, bulkActions(f, tbody),
    h('div', { class: 'table-wrap' }, h('table', { id: 'runs' },
      h('thead', {}, h('tr', {}, ['', 'Status', 'Workflow', 'Trigger event', 'Started', 'Duration', 'Attempts', 'Run'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody)), empty, pager);

  if (f.cursor) return;  // live updates on the first page only
  leaveView = streamRuns((run) => {
    const existing = tbody.querySelector(`tr[data-run-id="${CSS.escape(run.id)}"]`);
    if (!runMatches(run, f)) { existing?.remove(); return; }
    const row = runRow(run);
    if (existing) existing.replaceWith(row); else tbody.prepend(row);
    empty.hidden = true;
  });
}

// Cancel, retry or replay the selected runs, or every run the filters match (the bulk
// routes, after a dry run says how many).
function bulkActions(f, tbody) {
  const result = h('div', { id: 'bulk-result', role: 'status', 'aria-live': 'polite' });
  const op = h('select', { id: 'bulk-op', 'aria-label': 'Operation' },
    ['cancel', 'retry', 'replay'].map((o) => h('option', { value: o }, o)));
  const filter = {};
  for (const [k, v] of [['status', f.status], ['workflow', f.workflow], ['event', f.event], ['from', f.from], ['to', f.to]]) if (v) filter[k] = v;
  const done = { cancel: 'cancelled', retry: 'retried', replay: 'replayed' };
  const selected = async () => {
    const ids = [...tbody.querySelectorAll('input.pick:checked')].map((c) => c.value);
    if (!ids.length) { result.replaceChildren(notice('Select runs first.', true)); return; }
    if (!window.confirm(`${op.value} ${ids.length} selected run(s)?`)) return;
    let ok = 0;
    const failures = [];
    for (const id of ids) {
      try {
        await api(`runs/${encodeURIComponent(id)}/${op.value}`, { method: 'POST' });
        ++ok;
      } catch (e) {
        failures.push(`${id.slice(0, 13)}…: ${e.message}`);
      }
    }
    result.replaceChildren(notice(`${done[op.value]} ${ok} of ${ids.length}${failures.length ? `; ${failures.join('; ')}` : ''}`, failures.length > 0));
  };
  const matching = async () => {
    try {
      const { matched } = await api(`runs/${op.value}`, { method: 'POST', body: { ...filter, dry_run: true } });
      if (!matched) { result.replaceChildren(notice('No runs match the filters.')); return; }
      if (!window.confirm(`${op.value} all ${matched} run(s) matching the filters?`)) return;
      const r = await api(`runs/${op.value}`, { method: 'POST', body: filter });
      result.replaceChildren(notice(`${done[op.value]} ${r[done[op.value]]} of ${r.matched} matching run(s).`));
    } catch (e) {
      result.replaceChildren(notice(`${op.value} failed: ${e.message}`, true));
    }
  };
  return h('div', { class: 'actions bulk' }, op,
    h('button', { type: 'button', id: 'bulk-selected', onclick: selected }, 'Selected runs'),
    h('button', { type: 'button', id: 'bulk-matching', class: 'danger', onclick: matching }, 'All matching runs'), result);
}

function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// ---- run detail -----------------------------------------------------------------------------

function jsonBlock(title, value, open = false) {
  const text = pretty(value);
  return h('details', { open },
    h('summary', {}, title),
    h('pre', {}, text),
    h('button', { type: 'button', onclick: (e) => navigator.clipboard?.writeText(text).then(() => { e.target.textContent = 'Copied'; }) }, 'Copy'));
}

function timeline(run, onReplayFrom) {
  const times = [Date.parse(run.created_at)];
  const now = Date.now();
  for (const s of run.steps) {
    for (const t of [s.started_at, s.ended_at, s.wake_at]) if (t) times.push(Date.parse(t));
    for (const a of s.history) times.push(Date.parse(a.started_at), Date.parse(a.ended_at));
  }
  if (run.ended_at) times.push(Date.parse(run.ended_at)); else times.push(now);
  const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1);
  const pos = (t) => `${((t - t0) / (t1 - t0)) * 100}%`;
  const width = (a, b) => `${Math.max(((b - a) / (t1 - t0)) * 100, 0.3)}%`;
  const rows = run.steps.map((s) => {
    const track = h('div', { class: 'tl-track', role: 'img', 'aria-label': `${s.key}: ${s.status}` });
    if (s.kind === 'sleep' || s.kind === 'wait' || s.kind === 'invoke') {
      const start = Date.parse(s.started_at), end = s.ended_at ? Date.parse(s.ended_at) : Math.min(now, Date.parse(s.wake_at || s.started_at));
      const reason = s.kind === 'sleep' ? `sleep until ${fmtTime(s.wake_at || s.ended_at)}` : s.kind === 'wait' ? 'waiting for an event' : 'waiting for a child run';
      track.append(h('div', { class: 'tl-gap', title: reason, style: `left:${pos(start)};width:${width(start, end)}` }));
    }
    for (const a of s.history) {
      const start = Date.parse(a.started_at), end = Date.parse(a.ended_at);
      track.append(h('div', { class: `tl-bar ${a.outcome}`, title: `attempt ${a.attempt}: ${a.outcome}, ${fmtMs(a.duration_ms)}`, style: `left:${pos(start)};width:${width(start, end)}` }));
    }
    const failures = s.history.filter((a) => a.outcome !== 'completed');
    return h('div', { class: 'tl-row', dataset: { stepKey: s.key } },
      h('div', {},
        h('div', { class: 'tl-label' }, h('strong', {}, s.key), ' ', badge(s.status)),
        h('div', { class: 'tl-meta' }, `${s.kind} · ${s.attempts} attempt${s.attempts === 1 ? '' : 's'}`,
          s.kind === 'sleep' && s.wake_at ? ` · until ${fmtTime(s.wake_at)}` : '')),
      track,
      h('div', { class: 'tl-body' },
        failures.map((a) => h('p', { class: 'notice error attempt-error' }, `Attempt ${a.attempt} ${a.outcome}: ${a.error?.message ?? pretty(a.error)}`)),
        s.output !== null ? jsonBlock('Output', s.output) : null,
        s.error !== null ? jsonBlock('Error', s.error, true) : null,
        s.history.some((a) => a.logs?.length) ? jsonBlock('Logs', s.history.flatMap((a) => a.logs || [])) : null,
        h('button', { type: 'button', class: 'replay-from', onclick: () => onReplayFrom(s.key) }, 'Replay from this step')));
  });
  return h('section', { class: 'timeline', 'aria-label': 'Timeline' }, rows.length ? rows : h('p', { class: 'muted' }, 'No steps yet.'));
}

async function renderRun(id, gen) {
  const result = h('div', { id: 'action-result', role: 'status', 'aria-live': 'polite' });
  const container = h('div', {});
  current(gen);
  show(container, result);

  const act = async (label, question, call) => {
    if (!window.confirm(question)) return;
    try {
      const r = await call();
      result.replaceChildren(r.id !== id
        ? notice(h('span', {}, `${label}: started `, h('a', { href: `#/runs/${r.id}`, class: 'new-run' }, r.id)))
        : notice(`${label}: the run is now ${r.status}.`));
      await load();
    } catch (e) {
      result.replaceChildren(notice(`${label} failed: ${e.message}`, true));
    }
  };
  const replayFrom = (step) => act('Replay', `Start a new run that replays from step "${step}"?`,
    () => api(`runs/${encodeURIComponent(id)}/replay`, { method: 'POST', body: { from_step: step } }));

  async function load() {
    let run;
    try {
      run = await api(`runs/${encodeURIComponent(id)}`);
      if (gen !== generation) return;
    } catch (e) {
      if (gen !== generation) return;
      container.replaceChildren(h('h1', {}, 'Run'), notice(e.status === 404 ? 'No run with this id.' : e.message, true));
      return;
    }
    const ended = ['completed', 'failed', 'cancelled'].includes(run.status);
    container.replaceChildren(
      h('p', {}, h('a', { href: '#/runs' }, '← Runs')),
      h('h1', {}, 'Run ', h('span', { class: 'id' }, run.id), ' ', h('span', { id: 'run-status' }, badge(run.status))),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Workflow'), h('dd', {}, `${run.workflow_id} (version ${run.version})`),
        run.held ? [h('dt', {}, 'Held'), h('dd', { id: 'run-held', class: 'held' }, run.held.message)] : null,
        h('dt', {}, 'Worker'), h('dd', {}, run.worker || '–'),
        h('dt', {}, 'Created'), h('dd', {}, fmtTime(run.created_at)),
        h('dt', {}, 'Duration'), h('dd', {}, fmtMs(run.duration_ms)),
        h('dt', {}, 'Attempt'), h('dd', {}, String(run.attempt + 1)),
        run.replay_of ? [h('dt', {}, 'Replay of'), h('dd', {}, h('a', { href: `#/runs/${run.replay_of}` }, run.replay_of))] : null),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'danger', id: 'btn-cancel', disabled: ended, onclick: () => act('Cancel', 'Cancel this run? It stops at its next step.', () => api(`runs/${encodeURIComponent(id)}/cancel`, { method: 'POST' })) }, 'Cancel'),
        h('button', { type: 'button', id: 'btn-retry', disabled: !['failed', 'cancelled'].includes(run.status), onclick: () => act('Retry', 'Retry this run? Completed steps are kept.', () => api(`runs/${encodeURIComponent(id)}/retry`, { method: 'POST' })) }, 'Retry'),
        h('button', { type: 'button', id: 'btn-replay', onclick: () => act('Replay', 'Start a new run of this workflow on the same event?', () => api(`runs/${encodeURIComponent(id)}/replay`, { method: 'POST' })) }, 'Replay')),
      run.error ? notice(`Error: ${run.error.message ?? pretty(run.error)}`, true) : null,
      h('h2', {}, 'Timeline'), timeline(run, replayFrom),
      h('h2', {}, 'Output'), jsonBlock('Run output', run.output, true),
      h('h2', {}, 'Trigger event'), h('p', { class: 'muted' }, `${run.event.name} · ${run.event.id} · ${fmtTime(run.event.ts)}`),
      jsonBlock('Event data', run.event.data, true),
      replayEdited(run));
  }
  // A replay on a new event of the same name with data edited here.
  function replayEdited(run) {
    const dataIn = h('textarea', { id: 'replay-data', spellcheck: 'false' }, pretty(run.event.data));
    return h('details', { class: 'stack' }, h('summary', {}, 'Replay with edited data'),
      h('label', { for: 'replay-data' }, 'Event data (JSON)'), dataIn,
      h('button', { type: 'button', id: 'btn-replay-data', onclick: () => {
        let data;
        try {
          data = JSON.parse(dataIn.value);
        } catch (err) {
          result.replaceChildren(notice(`The data is not valid JSON: ${err.message}`, true));
          return;
        }
        act('Replay', 'Start a new run on this data?', () => api(`runs/${encodeURIComponent(id)}/replay`, { method: 'POST', body: { data } }));
      } }, 'Replay with this data'));
  }
  await load();
  current(gen);
  let pending = null;
  leaveView = streamRuns((run) => {
    if (run.id !== id || pending) return;
    pending = setTimeout(() => { pending = null; load(); }, 150);
  });
}

// ---- workflows ------------------------------------------------------------------------------

async function renderWorkflows(gen) {
  const { workflows, retention_ms: retention } = await api('workflows');
  current(gen);
  const result = h('div', { id: 'workflow-result', role: 'status', 'aria-live': 'polite' });
  const toggle = (w) => h('button', { type: 'button', class: 'pause-toggle', onclick: async () => {
    const verb = w.paused ? 'resume' : 'pause';
    try {
      await api(`workflows/${encodeURIComponent(w.id)}/${verb}`, { method: 'POST' });
      if (gen === generation) await renderWorkflows(gen);
    } catch (e) {
      result.replaceChildren(notice(`${verb} failed: ${e.message}`, true));
    }
  } }, w.paused ? 'Resume' : 'Pause');
  const days = (ms) => (ms % 86400000 === 0 ? `${ms / 86400000} days` : fmtMs(ms));
  const counts = (c) => (Object.keys(c).length ? Object.entries(c).map(([s, n]) => `${s} ${n}`).join(' · ') : 'none');
  const pct = (r) => (r === null ? '–' : `${(r * 100).toFixed(1)}%`);
  const windowStats = (label, w) => h('div', {},
    h('strong', {}, label), h('div', {}, counts(w.counts)),
    h('div', { class: 'muted' }, `p50 ${fmtMs(w.p50_ms)} · p95 ${fmtMs(w.p95_ms)} · failure rate ${pct(w.failure_rate)}`));
  // Which processes run it: this server, others that embed Cairn, stopped or silent ones.
  const processes = (w) => {
    const names = w.processes.map((p) => `${p.name}${p.live ? '' : p.stopped_at === null ? ' (silent)' : ' (stopped)'}`);
    if (w.local && !names.length) names.push('this server');
    return names.length ? [...new Set(names)].join(', ') : 'no process';
  };
  show(h('h1', {}, 'Workflows'),
    h('p', { id: 'retention', class: 'muted' }, retention
      ? `Ended runs are deleted ${days(retention)} after they end, with their steps and the events no run needs (CAIRN_RETENTION).`
      : 'Ended runs are kept until deleted with cairn gc (retention is off).'),
    result, workflows.length === 0 ? notice('No workflows are registered on this database.') : null,
    h('div', { class: 'cards' }, workflows.map((w) => h('article', { class: 'card', dataset: { workflow: w.id, paused: String(!!w.paused) } },
      h('h2', {}, h('a', { href: `#/runs?workflow=${encodeURIComponent(w.id)}` }, w.id), h('span', { class: 'muted' }, ` v${w.version}`),
        w.app ? [' ', h('span', { class: 'badge app', title: 'A function of an Inngest SDK app (docs/sdk.md)' }, `app ${w.app}`)] : null,
        w.paused ? [' ', h('span', { class: 'badge s-cancelled' }, 'paused')] : null),
      h('p', { class: 'state' }, w.paused ? `Paused since ${fmtTime(w.paused_at)}: its runs queue up and none starts. ` : 'Active. ', toggle(w)),
      h('p', {}, 'Triggers: ', w.triggers.length ? w.triggers.join(', ') : w.cron ? 'none' : 'none (invoked or on-failure)'),
      w.cron ? h('p', { class: 'schedule' }, `Schedule: ${w.cron} · next tick ${fmtTime(w.next_tick)}`) : null,
      w.cancel_on?.length ? h('p', { class: 'muted' }, 'Cancelled by: ', w.cancel_on.map((c) => `${c.event}${c.match ? ` (same ${c.match})` : ''}${c.timeout_ms ? ` within ${fmtMs(c.timeout_ms)}` : ''}`).join(', ')) : null,
      w.flow_control ? h('p', { class: 'flow' }, 'Flow control: ', w.flow_control.summary) : null,
      h('p', { class: 'processes' }, 'Executed by: ', processes(w)),
      h('p', { class: 'muted' }, `Retries: up to ${w.options.max_attempts} attempts, backoff ${fmtMs(w.options.initial_delay_ms)} ×${w.options.backoff_multiplier} (max ${fmtMs(w.options.max_delay_ms)})`,
        w.options.step_timeout_ms ? ` · step timeout ${fmtMs(w.options.step_timeout_ms)}` : '',
        w.options.run_timeout_ms ? ` · run timeout ${fmtMs(w.options.run_timeout_ms)}` : ''),
      windowStats('Last hour', w.last_hour), windowStats('Last day', w.last_day),
      h('p', { class: 'muted' }, `All time: ${counts(w.counts)}`)))));
}

// ---- events ---------------------------------------------------------------------------------

async function renderEvents(gen) {
  const { events } = await api('events?limit=50');
  current(gen);
  const nameIn = h('input', { id: 'event-name', required: true, placeholder: 'example/hello' });
  const dataIn = h('textarea', { id: 'event-data', spellcheck: 'false' }, '{\n  \n}');
  const result = h('div', { id: 'send-result', role: 'status', 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    let data;
    try {
      data = JSON.parse(dataIn.value);
    } catch (err) {
      result.replaceChildren(notice(`The data is not valid JSON: ${err.message}`, true));
      dataIn.focus();
      return;
    }
    try {
      const sent = await api('events', { method: 'POST', body: { name: nameIn.value.trim(), data } });
      result.replaceChildren(notice(h('span', {}, `Sent ${sent.id}; `, sent.run_ids.length ? 'runs: ' : 'no workflow listens to it.',
        sent.run_ids.map((r) => h('a', { href: `#/runs/${r}`, class: 'new-run' }, `${r} `)))));
    } catch (err) {
      result.replaceChildren(notice(`Not sent: ${err.message}`, true));
    }
  } },
  h('label', { for: 'event-name' }, 'Event name'), nameIn,
  h('label', { for: 'event-data' }, 'Data (JSON)'), dataIn,
  h('button', { class: 'primary', type: 'submit' }, 'Send test event'), result);
  show(h('h1', {}, 'Events'),
    h('div', { class: 'table-wrap' }, h('table', { id: 'events' },
      h('thead', {}, h('tr', {}, ['Name', 'Received', 'Runs', 'Event'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, events.map((e) => h('tr', {},
        h('td', {}, e.name), h('td', {}, fmtTime(e.received_at)),
        h('td', {}, e.run_ids.length ? e.run_ids.map((r) => h('a', { href: `#/runs/${r}` }, `${r.slice(0, 13)}… `)) : (e.skipped?.length ? null : '–'),
          (e.skipped || []).map((s) => h('span', { class: 'skipped muted' }, `${s.workflow_id}: skipped: ${s.reason} `))),
        h('td', { class: 'id' }, e.id)))))),
    h('h2', {}, 'Send a test event'), form);
}

// ---- routing --------------------------------------------------------------------------------

async function route() {
  const gen = ++generation;
  leaveView();
  leaveView = () => {};
  if (!key()) return renderSignIn();
  nav.hidden = false;
  const { parts, params } = parseHash();
  for (const a of nav.querySelectorAll('a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === `#/${parts[0]}`);
    if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
  }
  try {
    if (parts[0] === 'runs' && parts[1]) await renderRun(decodeURIComponent(parts[1]), gen);
    else if (parts[0] === 'workflows') await renderWorkflows(gen);
    else if (parts[0] === 'events') await renderEvents(gen);
    else await renderRuns(params, gen);
  } catch (e) {
    if (e instanceof Stale) return;  // a newer navigation owns the page
    if (e.status !== 401 && gen === generation) show(notice(`Could not load this page: ${e.message}`, true));
  }
}

document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', route);
route();
