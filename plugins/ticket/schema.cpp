// The ticket plugin's tables (component "ticket"). Portable SQL for SQLite and Postgres;
// booleans are INTEGER 0/1 and lists (tags, skills) JSON text, read whole.

#include "plugins/ticket/ticket_plugin.hpp"

namespace cairn::ticket {
namespace {

constexpr std::string_view kTicketV1 = R"sql(
CREATE TABLE ticket_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    skills        TEXT    NOT NULL,
    active        INTEGER NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX users_by_role ON users (role, active);
CREATE TABLE auth_sessions (
    id            TEXT   PRIMARY KEY,
    user_id       TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT
);
CREATE INDEX auth_sessions_by_user ON auth_sessions (user_id);
CREATE TABLE refresh_tokens (
    hash       TEXT   PRIMARY KEY,
    session_id TEXT   NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
CREATE TABLE tickets (
    id             TEXT   PRIMARY KEY,
    title          TEXT   NOT NULL,
    description    TEXT   NOT NULL,
    tags           TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    priority       TEXT,
    deadline       BIGINT,
    created_by     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    assigned_to    TEXT   REFERENCES users (id) ON DELETE SET NULL,
    helpful_notes  TEXT,
    related_skills TEXT   NOT NULL,
    summary        TEXT,
    run_id         TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX tickets_by_creator ON tickets (created_by, created_at);
CREATE INDEX tickets_by_assignee ON tickets (assigned_to, status);
CREATE INDEX tickets_by_created ON tickets (created_at);
CREATE TABLE ticket_replies (
    id         TEXT   PRIMARY KEY,
    ticket_id  TEXT   NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    author_id  TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ticket_replies_by_ticket ON ticket_replies (ticket_id, created_at);
CREATE TABLE ticket_changes (
    id          TEXT   PRIMARY KEY,
    ticket_id   TEXT   NOT NULL,
    owner_id    TEXT   NOT NULL,
    assigned_to TEXT,
    kind        TEXT   NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX ticket_changes_by_time ON ticket_changes (at, id);
CREATE TABLE mail_outbox (
    id              TEXT   PRIMARY KEY,
    idempotency_key TEXT   NOT NULL UNIQUE,
    to_addr         TEXT   NOT NULL,
    subject         TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    transport       TEXT   NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX mail_outbox_by_time ON mail_outbox (created_at);
)sql";

// The feed reads ticket_changes by a sequence the database assigns, not by time: a change
// that commits long after its `at` is still found, and a page of rows always moves on.
// SQLite assigns it in commit order (one writer); Postgres at insert, so the feed tracks
// the gaps of transactions still in flight.
constexpr std::string_view kTicketV2Sqlite = R"sql(
CREATE TABLE ticket_changes_v2 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT   NOT NULL UNIQUE,
    ticket_id   TEXT   NOT NULL,
    owner_id    TEXT   NOT NULL,
    assigned_to TEXT,
    kind        TEXT   NOT NULL,
    at          BIGINT NOT NULL
);
INSERT INTO ticket_changes_v2 (id, ticket_id, owner_id, assigned_to, kind, at)
    SELECT id, ticket_id, owner_id, assigned_to, kind, at FROM ticket_changes ORDER BY at, id;
DROP TABLE ticket_changes;
ALTER TABLE ticket_changes_v2 RENAME TO ticket_changes;
CREATE INDEX ticket_changes_by_time ON ticket_changes (at);
)sql";

constexpr std::string_view kTicketV3Postgres = R"sql(
ALTER TABLE ticket_changes ADD COLUMN seq BIGSERIAL;
CREATE UNIQUE INDEX ticket_changes_by_seq ON ticket_changes (seq);
)sql";

// Per-user quotas count a user's replies of the last day.
constexpr std::string_view kTicketV4 = R"sql(
CREATE INDEX ticket_replies_by_author ON ticket_replies (author_id, created_at);
)sql";

constexpr storage::Migration kMigrations[] = {
    {1, "users, auth, tickets, mail", kTicketV1},
    {2, "ticket changes in sequence on SQLite", kTicketV2Sqlite, storage::Backend::sqlite},
    {3, "ticket changes in sequence on Postgres", kTicketV3Postgres, storage::Backend::postgres},
    {4, "replies by author", kTicketV4},
};

}  // namespace

storage::Component ticket_component() {
    return {"ticket", kMigrations};
}

}  // namespace cairn::ticket
