#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::storage {
class Database;
}

namespace cairn::ticket {

struct Mail {
    std::string to;
    std::string subject;
    std::string body;  // plain text
    // A second send with the same key is skipped once the first is recorded, so a step
    // that is retried after sending does not mail twice.
    std::string idempotency_key;
};

// Sends mail. Thread-safe. send() throws std::runtime_error when delivery fails (a retried
// step error); returns false when the key was already sent.
class Mailer {
  public:
    virtual ~Mailer() = default;
    virtual std::string_view name() const = 0;
    virtual bool send(const Mail& mail) = 0;
};

// `spec` is CAIRN_MAIL: "outbox" (default; mails are stored in the database) or
// smtp://user:pass@host:port (STARTTLS required; ?tls=try uses it when offered, ?tls=none
// never) or
// smtps://... (TLS from the start). Every mail, however delivered, is recorded in the
// outbox table. Throws std::invalid_argument for a malformed spec.
std::unique_ptr<Mailer> make_mailer(std::string_view spec, std::string from, storage::Database& db);

// The spec with any password masked, for logs.
std::string redact_mail_spec(std::string_view spec);

struct OutboxEntry {
    std::string id;
    std::string to;
    std::string subject;
    std::string body;
    std::string transport;  // outbox, smtp
    std::int64_t created_at = 0;
};

// Recorded mails, newest first; `to` filters by recipient.
std::vector<OutboxEntry> list_outbox(storage::Database& db, const std::optional<std::string>& to,
                                     int limit);

}  // namespace cairn::ticket
