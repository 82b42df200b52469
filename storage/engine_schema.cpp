// The engine's schema: tables, indexes and the Postgres claim function, as numbered
// migrations that never change once released.

#include "storage/run_store.hpp"

namespace cairn::storage {
namespace {

// While an item is leased its due_at is the lease expiry, so one partial index on due_at
// finds both new work and work whose holder died. A parked item (finished run) has
// due_at NULL and is kept, so its lease epoch never goes back to zero.
constexpr std::string_view kEngineV1 = R"sql(
CREATE TABLE events (
    id              TEXT   PRIMARY KEY,
    name            TEXT   NOT NULL,
    data            TEXT   NOT NULL,
    ts              BIGINT NOT NULL,
    idempotency_key TEXT   UNIQUE,
    received_at     BIGINT NOT NULL
);
CREATE INDEX events_name_ts ON events (name, ts);

CREATE TABLE runs (
    id              TEXT   PRIMARY KEY,
    workflow_id     TEXT   NOT NULL,
    version         TEXT   NOT NULL,
    event_id        TEXT   NOT NULL REFERENCES events (id),
    status          TEXT   NOT NULL,
    output          TEXT,
    error           TEXT,
    attempt         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    ended_at        BIGINT,
    updated_at      BIGINT NOT NULL,
    parent_run_id   TEXT,
    parent_step_key TEXT,
    worker          TEXT,
    replay_of       TEXT
);
CREATE INDEX runs_workflow ON runs (workflow_id, id);
CREATE INDEX runs_updated ON runs (updated_at);
CREATE INDEX runs_status ON runs (status, id);
CREATE INDEX runs_event ON runs (event_id);

CREATE TABLE steps (
    run_id     TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT   NOT NULL DEFAULT 'step',
    status     TEXT   NOT NULL,
    output     TEXT,
    error      TEXT,
    attempts   BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    ended_at   BIGINT,
    wake_at    BIGINT,
    PRIMARY KEY (run_id, step_key)
);

CREATE TABLE step_attempts (
    run_id     TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key   TEXT   NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    attempt    BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL,
    outcome    TEXT   NOT NULL,
    error      TEXT,
    logs       TEXT   NOT NULL DEFAULT '[]',
    worker     TEXT,
    PRIMARY KEY (run_id, step_key, generation, attempt)
);

CREATE TABLE queue (
    run_id      TEXT   PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    due_at      BIGINT,
    priority    BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    lease_epoch BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX queue_due ON queue (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE waits (
    run_id      TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key    TEXT   NOT NULL,
    event_name  TEXT   NOT NULL,
    match_field TEXT   NOT NULL,
    match_value TEXT,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_key)
);
CREATE INDEX waits_event ON waits (event_name);
)sql";

// Claims walk the queue in claim order and stop after LIMIT rows, instead of sorting every
// due item (with thousands queued, that sort was the dearest part of a claim).
constexpr std::string_view kEngineV2 = R"sql(
CREATE INDEX queue_claim ON queue (priority DESC, due_at, run_id) WHERE due_at IS NOT NULL;
DROP INDEX queue_due;
)sql";

// Postgres checks a foreign key with a locking read of the parent row (SELECT ... FOR KEY
// SHARE) per inserted row: two per step, a tenth of the server's time in the throughput
// benchmark. The engine writes steps and attempts only behind the fence of the run's queue
// item, whose own key to runs stays, and never deletes runs; so these two keys checked
// nothing the fence does not (docs/storage.md). SQLite's checks are plain index lookups and
// cost nothing measurable there, and it cannot drop a constraint, so it keeps them.
constexpr std::string_view kEngineV3 = R"sql(
ALTER TABLE steps DROP CONSTRAINT steps_run_id_fkey;
ALTER TABLE step_attempts DROP CONSTRAINT step_attempts_run_id_fkey;
)sql";

// Postgres plans the claim statement anew on every call: with the LIMIT a parameter, a
// generic plan would assume a tenth of the queue is taken and scan it, so the custom plan
// always looks cheaper (0.4 ms of planning per claim under load). A function can carry
// plan_cache_mode, and PL/pgSQL keeps its statements' plans per connection: here the claim
// is planned once per connection, as the index walk (the ANY(ARRAY(...)) form's generic
// plan walks queue_claim and stops at the limit). The same claim as SQLite's two
// statements: take the due items in claim order, skipping locked ones; renew their
// lease; mark their runs running unless ended.
constexpr std::string_view kEngineV4 = R"sql(
CREATE FUNCTION cairn_claim(p_owner TEXT, p_until BIGINT, p_now BIGINT, p_limit INTEGER)
RETURNS TABLE (claimed_run TEXT, claimed_epoch BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN QUERY
    WITH claimed AS (
        UPDATE queue q SET lease_owner = p_owner, lease_until = p_until, due_at = p_until,
            lease_epoch = q.lease_epoch + 1
        WHERE q.run_id = ANY (ARRAY(
            SELECT w.run_id FROM queue w WHERE w.due_at <= p_now
            ORDER BY w.priority DESC, w.due_at, w.run_id LIMIT p_limit FOR UPDATE SKIP LOCKED))
        RETURNING q.run_id, q.lease_epoch),
    started AS (
        UPDATE runs r SET status = 'running', worker = p_owner, updated_at = p_now,
            started_at = COALESCE(r.started_at, p_now)
        FROM claimed c WHERE r.id = c.run_id
            AND r.status NOT IN ('completed', 'failed', 'cancelled'))
    SELECT c.run_id, c.lease_epoch FROM claimed c;
END
$fn$;
)sql";

// A step that completes on its first attempt (nearly every step) keeps that attempt in its
// own row: what its attempt row would say beyond the step row (the run's retry
// generation, the worker, the attempt's log lines); started_at, ended_at and the outcome
// are the step's, which a completed step never changes. Every other attempt is a row of
// step_attempts, as are first attempts recorded before this migration. attempt_history
// is every attempt in either place. A step's attempt row was two B-tree insertions more
// per step.
constexpr std::string_view kEngineV5 = R"sql(
ALTER TABLE steps ADD COLUMN attempt_generation BIGINT;
ALTER TABLE steps ADD COLUMN attempt_worker TEXT;
ALTER TABLE steps ADD COLUMN attempt_logs TEXT;
CREATE VIEW attempt_history AS
SELECT run_id, step_key, generation, attempt, started_at, ended_at, outcome, error, logs, worker
FROM step_attempts
UNION ALL
SELECT run_id, step_key, attempt_generation, 1, started_at, ended_at, 'completed', NULL,
    attempt_logs, attempt_worker
FROM steps WHERE attempt_generation IS NOT NULL;
)sql";

// The change feed follows runs.updated_at, and every step used to touch its run for it:
// an UPDATE of the run's row per step, which on Postgres is a new row version with an
// entry in each of runs' five indexes, and on both moves the run in runs_updated. A step
// now carries its own change time, indexed for the feed, which merges the runs' changes
// and the steps' (changes_since); a run's updated_at as read is the later of its row's
// and its steps' (run_columns).
constexpr std::string_view kEngineV6 = R"sql(
ALTER TABLE steps ADD COLUMN changed_at BIGINT;
CREATE INDEX steps_changed ON steps (changed_at, run_id);
)sql";

// Processes on one database may register different workflows (a service embedding Cairn
// beside `cairn serve`): each claims only the runs of workflows it knows, so a queue item
// carries its run's workflow. Each process that executes runs lists itself and its
// workflows in `processes`, so every process can show the workflows of all.
constexpr std::string_view kEngineV7 = R"sql(
ALTER TABLE queue ADD COLUMN workflow_id TEXT;
UPDATE queue SET workflow_id = (SELECT r.workflow_id FROM runs r WHERE r.id = queue.run_id);
CREATE TABLE processes (
    id           TEXT   PRIMARY KEY,
    name         TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT,
    workflows    TEXT   NOT NULL
);
)sql";

// The claim of migration 4 with the claimer's workflows: NULL takes any item; an item
// written before migration 7 (no workflow) goes to any claimer, as it did. The form of
// migration 4 stays for processes of the version before, during an upgrade.
constexpr std::string_view kEngineV8 = R"sql(
CREATE FUNCTION cairn_claim(p_owner TEXT, p_until BIGINT, p_now BIGINT, p_limit INTEGER,
                            p_workflows TEXT[])
RETURNS TABLE (claimed_run TEXT, claimed_epoch BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN QUERY
    WITH claimed AS (
        UPDATE queue q SET lease_owner = p_owner, lease_until = p_until, due_at = p_until,
            lease_epoch = q.lease_epoch + 1
        WHERE q.run_id = ANY (ARRAY(
            SELECT w.run_id FROM queue w WHERE w.due_at <= p_now
                AND (p_workflows IS NULL OR w.workflow_id IS NULL
                     OR w.workflow_id = ANY (p_workflows))
            ORDER BY w.priority DESC, w.due_at, w.run_id LIMIT p_limit FOR UPDATE SKIP LOCKED))
        RETURNING q.run_id, q.lease_epoch),
    started AS (
        UPDATE runs r SET status = 'running', worker = p_owner, updated_at = p_now,
            started_at = COALESCE(r.started_at, p_now)
        FROM claimed c WHERE r.id = c.run_id
            AND r.status NOT IN ('completed', 'failed', 'cancelled'))
    SELECT c.run_id, c.lease_epoch FROM claimed c;
END
$fn$;
)sql";

// Run control by workflow. Every process leaves a paused workflow out of the workflows it
// claims (events are still recorded and runs queued); resume deletes the row. A cron schedule keeps
// its last fired tick, so a process that starts after downtime fires the most recent missed tick
// once; each tick's run is deduplicated by its event's idempotency key across processes.
constexpr std::string_view kEngineV9 = R"sql(
CREATE TABLE workflow_pauses (
    workflow_id TEXT   PRIMARY KEY,
    paused_at   BIGINT NOT NULL
);
CREATE TABLE schedules (
    workflow_id TEXT   PRIMARY KEY,
    cron        TEXT   NOT NULL,
    last_tick   BIGINT NOT NULL
);
)sql";

// A wait may filter the events it takes by an expression over the event (`async`), kept as
// text with the waiting run's own event already bound into it.
constexpr std::string_view kEngineV10 = R"sql(
ALTER TABLE waits ADD COLUMN expression TEXT;
)sql";

// Flow control (docs/flow-control.md). A run under it starts through admission: its item
// waits with admit_at set (due_at NULL, so claims never see it) until a process admits it
// (FlowStore::admit), taking its concurrency slots (`slots` = 1) and making it due. An item
// whose keys are full parks on one (held_key) until a slot on that key frees. flow_state
// keeps each key's state: slots in use (n), a throttle's theoretical arrival time or
// an idempotency window's end (at), the pending debounce, batch or singleton run, a rate
// limit's recent start times (times). run_events lists a
// batch run's events; event_skips, the runs an event did not start and why.
constexpr std::string_view kEngineV11 = R"sql(
ALTER TABLE queue ADD COLUMN admit_at BIGINT;
ALTER TABLE queue ADD COLUMN flow TEXT;
ALTER TABLE queue ADD COLUMN conc1 TEXT;
ALTER TABLE queue ADD COLUMN conc2 TEXT;
ALTER TABLE queue ADD COLUMN slots BIGINT NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN held TEXT;
ALTER TABLE queue ADD COLUMN held_key TEXT;
CREATE INDEX queue_admit ON queue (admit_at, run_id) WHERE admit_at IS NOT NULL AND held_key IS NULL;
CREATE INDEX queue_parked ON queue (held_key, admit_at, run_id) WHERE held_key IS NOT NULL;
CREATE TABLE flow_state (
    key    TEXT   PRIMARY KEY,
    n      BIGINT NOT NULL DEFAULT 0,
    at     BIGINT,
    run_id TEXT,
    times  TEXT
);
CREATE TABLE run_events (
    run_id   TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    event_id TEXT   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_events_event ON run_events (event_id);
CREATE TABLE event_skips (
    event_id    TEXT   NOT NULL,
    workflow_id TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (event_id, workflow_id)
);
)sql";

// A run holding concurrency slots gives them back when it stops executing (its lease is
// released: it sleeps, waits, backs off or ends): the trigger appends each key to
// flow_releases, which admission takes (FlowStore::take_releases) to count the slot free
// and send the oldest item parked on the key back to admission; the item itself, when due
// again, must be admitted again. An item with concurrency keys that becomes due without
// slots (a wait completed, a retry) goes to admission too. Every path that moves a lease
// or a due time is covered, so none of them knows about flow control; rows without
// concurrency keys fail the WHEN at once. The trigger appends rather than updating the key's
// row: a batch of writes would lock the keys of its runs in no set order, and deadlock
// with admission, which locks keys in their order.
constexpr std::string_view kEngineV12Sqlite = R"sql(
CREATE TABLE flow_releases (
    id  INTEGER PRIMARY KEY,
    key TEXT    NOT NULL
);
CREATE TRIGGER queue_slot_release AFTER UPDATE OF lease_owner ON queue
WHEN OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL AND NEW.slots > 0
BEGIN
    INSERT INTO flow_releases (key) SELECT NEW.conc1 WHERE NEW.conc1 IS NOT NULL;
    INSERT INTO flow_releases (key) SELECT NEW.conc2 WHERE NEW.conc2 IS NOT NULL;
    UPDATE queue SET slots = 0, admit_at = NEW.due_at, due_at = NULL WHERE run_id = NEW.run_id;
END;
CREATE TRIGGER queue_slot_due AFTER UPDATE OF due_at ON queue
WHEN NEW.conc1 IS NOT NULL AND NEW.slots = 0 AND NEW.lease_owner IS NULL
    AND NEW.due_at IS NOT NULL
BEGIN
    UPDATE queue SET admit_at = NEW.due_at, due_at = NULL WHERE run_id = NEW.run_id;
END;
)sql";

// The same on Postgres, as BEFORE triggers that change the row in place; a release wakes
// every process (NOTIFY), since any of them may admit the item it lets through.
constexpr std::string_view kEngineV13Postgres = R"sql(
CREATE TABLE flow_releases (
    id  BIGSERIAL PRIMARY KEY,
    key TEXT      NOT NULL
);
CREATE FUNCTION cairn_slot_release() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.slots := 0;
    NEW.admit_at := NEW.due_at;
    NEW.due_at := NULL;
    INSERT INTO flow_releases (key) SELECT k FROM unnest(ARRAY[OLD.conc1, OLD.conc2]) AS k
        WHERE k IS NOT NULL;
    PERFORM pg_notify('cairn_queue', 'flow');
    RETURN NEW;
END
$fn$;
CREATE TRIGGER queue_slot_release BEFORE UPDATE OF lease_owner ON queue FOR EACH ROW
WHEN (OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL AND OLD.slots > 0)
EXECUTE FUNCTION cairn_slot_release();
CREATE FUNCTION cairn_slot_due() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.admit_at := NEW.due_at;
    NEW.due_at := NULL;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER queue_slot_due BEFORE UPDATE OF due_at ON queue FOR EACH ROW
WHEN (NEW.conc1 IS NOT NULL AND NEW.slots = 0 AND NEW.lease_owner IS NULL
      AND NEW.due_at IS NOT NULL)
EXECUTE FUNCTION cairn_slot_due();
)sql";

constexpr Migration kMigrations[] = {
    {1, "engine tables: events, runs, steps, queue, waits", kEngineV1},
    {2, "queue index in claim order", kEngineV2},
    {3, "steps and attempts without a foreign key on Postgres", kEngineV3, Backend::postgres},
    {4, "the claim as a function with a generic plan on Postgres", kEngineV4, Backend::postgres},
    {5, "a step's first attempt in its own row when it completed", kEngineV5},
    {6, "steps with their own change time for the change feed", kEngineV6},
    {7, "queue items name their workflow; the processes table", kEngineV7},
    {8, "the claim takes the claimer's workflows on Postgres", kEngineV8, Backend::postgres},
    {9, "paused workflows and cron schedules", kEngineV9},
    {10, "waits filtered by an expression", kEngineV10},
    {11, "flow control: admission, key state, batches, skipped starts", kEngineV11},
    {12, "flow control: slots given back by triggers on SQLite", kEngineV12Sqlite, Backend::sqlite},
    {13, "flow control: slots given back by triggers on Postgres", kEngineV13Postgres,
     Backend::postgres},
};

}  // namespace

Component run_store_component() {
    return Component{"engine", kMigrations};
}

}  // namespace cairn::storage
