// The queue: claims, leases and the fence every write for a leased run goes behind.

#include <fmt/format.h>

#include "storage/detail/params.hpp"
#include "storage/detail/run_rows.hpp"
#include "storage/detail/run_statements.hpp"
#include "storage/run_store.hpp"

namespace cairn::storage {

namespace {

// The claimed runs, with the state of each that has no steps yet (one statement for all
// of them), so that starting an execution costs neither a write nor a read of its own.
std::vector<Claim> with_states(std::vector<Lease> leases, const detail::Exec& read) {
    std::vector<Claim> out;
    if (leases.empty()) return out;
    detail::Params param;
    std::string ids;
    for (Lease& lease : leases) {
        ids += fmt::format("{}{}", ids.empty() ? "" : ", ", param(lease.run_id));
        out.push_back(Claim{std::move(lease), std::nullopt});
    }
    // Only runs without steps keep their state, whose row's updated_at is their
    // updated_at (run_columns).
    const std::string sql = fmt::format(
        "SELECT {}, r.updated_at, {} FROM runs r JOIN events e ON e.id = r.event_id "
        "WHERE r.id IN ({})",
        detail::kRunColumnsButUpdated, detail::kStateExtraColumns, ids);
    for (auto row : read(sql, param.values)) {
        if (!row.get<bool>(detail::kFreshColumn)) continue;  // has steps: the worker loads it
        const auto id = row.get<std::string>(0);
        for (Claim& c : out) {
            if (c.lease.run_id == id) c.state = detail::read_state(row);
        }
    }
    return out;
}

}  // namespace

void RunStore::claim_only(std::span<const std::string> workflow_ids) {
    Value set = sql_->workflow_set(workflow_ids);
    std::lock_guard lock(claim_mu_);
    claim_workflows_ = std::move(set);
}

Value RunStore::claim_workflows() const {
    std::lock_guard lock(claim_mu_);
    return claim_workflows_;
}

std::vector<Claim> RunStore::claim_runs(std::string_view owner, int limit, std::int64_t now,
                                        std::int64_t lease_ms) {
    if (limit <= 0) return {};
    if (!sql_->writes_alone())
        return db_.transact(
            [&](Transaction& tx) { return claim_runs(tx, owner, limit, now, lease_ms); });
    // The claim commits on its own; the read needs no transaction.
    auto on_its_own = [this](Access access) {
        return [this, access](std::string_view sql, std::span<const Value> params) {
            return db_.exec_once(access, sql, params);
        };
    };
    return with_states(sql_->claim(on_its_own(Access::read_write), owner, limit, now,
                                   now + lease_ms, claim_workflows()),
                       on_its_own(Access::read_only));
}

std::vector<Claim> RunStore::claim_runs(Transaction& tx, std::string_view owner, int limit,
                                        std::int64_t now, std::int64_t lease_ms) {
    if (limit <= 0) return {};
    const detail::Exec exec = detail::in(tx);
    return with_states(sql_->claim(exec, owner, limit, now, now + lease_ms, claim_workflows()),
                       exec);
}

std::vector<Lease> RunStore::claim(std::string_view owner, int limit, std::int64_t now,
                                   std::int64_t lease_ms) {
    std::vector<Lease> out;
    for (auto& c : claim_runs(owner, limit, now, lease_ms)) out.push_back(std::move(c.lease));
    return out;
}

bool RunStore::renew(Lease& lease, std::int64_t now, std::int64_t lease_ms) {
    const std::int64_t until = now + lease_ms;
    auto r = db_.exec(
        "UPDATE queue SET lease_until = $4, due_at = $4 "
        "WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch, until);
    if (r.affected() != 1) return false;
    lease.until = until;
    return true;
}

bool RunStore::release(const Lease& lease, std::optional<std::int64_t> next_due) {
    auto r = db_.exec(
        "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = $4 "
        "WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch, next_due);
    return r.affected() == 1;
}

void RunStore::release(Transaction& tx, const Lease& lease, std::optional<std::int64_t> next_due) {
    tx.exec(
        "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = $4 "
        "WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch, next_due);
}

bool RunStore::hold_fence(Transaction& tx, const Lease& lease) {
    // An UPDATE rather than a SELECT: it takes the row lock on Postgres, so a concurrent
    // claim waits for this transaction (or this one sees the claim's new epoch).
    auto r = tx.exec(
        "UPDATE queue SET lease_epoch = lease_epoch WHERE run_id = $1 AND lease_owner = $2 AND "
        "lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch);
    return r.affected() == 1;
}

}  // namespace cairn::storage
