#include "engine/detail/intake.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "engine/detail/json_text.hpp"
#include "engine/expression.hpp"

namespace cairn::engine::detail {

namespace {

// The step key of a cancel_on wait: no step's key starts so (keys are the workflow's names).
constexpr std::string_view kCancelOnKey = "cairn/cancel-on/";
constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

// A wait's expression (its run's event bound in) against the incoming event; one that no
// longer parses matches nothing.
bool expression_matches(const std::string& text, const json& ev) {
    try {
        return Expression::parse(text).matches(nullptr, ev);
    } catch (const ExpressionError&) {
        return false;
    }
}

struct EventWriteItem final : storage::BatchedWrite {
    EventWriteItem(const storage::WriteKind& kind, Intake::Sending& s)
        : BatchedWrite(kind), sending(&s) {}
    Intake::Sending* sending;
};

std::vector<Intake::Sending*> sendings(std::span<storage::BatchedWrite* const> writes) {
    std::vector<Intake::Sending*> out;
    out.reserve(writes.size());
    for (storage::BatchedWrite* w : writes) out.push_back(static_cast<EventWriteItem*>(w)->sending);
    return out;
}

// Sends on their own, written together: on Postgres the events that no run waits for and
// that repeat no id or key go in one statement (RunStore::insert_events) that commits on
// its own; each other one is written on its own, as a send in a transaction is.
class EventKind final : public storage::WriteKind {
  public:
    explicit EventKind(Intake& intake) : intake_(intake) {}

    void write(storage::Transaction& tx, std::span<storage::BatchedWrite* const> writes,
               std::size_t /*batch_size*/) const override {
        const std::vector<Intake::Sending*> sends = sendings(writes);
        intake_.write(tx, sends);
        tx.on_end([this, sends](bool committed) {
            for (Intake::Sending* s : sends) intake_.deliver(*s, committed);
        });
    }

    bool commits_alone(const storage::Database& /*db*/) const override {
        return intake_.store().writes_alone();
    }

    void write_alone(storage::Database& db,
                     std::span<storage::BatchedWrite* const> writes) const override {
        const std::vector<Intake::Sending*> sends = sendings(writes);
        std::vector<storage::EventWrite> events = intake_.event_writes(sends);
        const std::vector<storage::EventWrite*> ptrs = intake_.batchable(sends, events);
        intake_.store().insert_events(ptrs);
        const std::vector<bool> written = intake_.take_written(sends, events);
        for (std::size_t i = 0; i < sends.size(); ++i) {
            Intake::Sending& s = *sends[i];
            if (written[i]) {
                intake_.deliver(s, true);
                continue;
            }
            try {
                db.transact([&](storage::Transaction& tx) {
                    intake_.write_one(tx, s);
                    tx.on_end([this, &s](bool committed) { intake_.deliver(s, committed); });
                });
            } catch (...) {
                writes[i]->error = std::current_exception();
            }
        }
    }

  private:
    Intake& intake_;
};

}  // namespace

Intake::Intake(storage::Database& db, storage::RunStore& store, const Registry& registry,
               const Pauses& pauses, WorkerPool& pool, Flow& flow, const Clock& clock)
    : db_(db),
      store_(store),
      registry_(registry),
      pauses_(pauses),
      pool_(pool),
      flow_(flow),
      clock_(clock),
      events_(std::make_unique<EventKind>(*this)) {}

Intake::~Intake() = default;

std::unique_ptr<Intake::Sending> Intake::prepare(const EventInput& in) {
    if (in.name.empty()) throw std::invalid_argument("event name must not be empty");
    auto s = std::make_unique<Sending>();
    s->in = &in;
    s->event.name = in.name;
    s->event.data = dump(in.data);
    s->event.id = in.id;
    s->event.idempotency_key = in.idempotency_key;
    s->event.ts = in.ts;
    s->runs = registry_.triggered(in.name, [&] {
        return json{{"id", in.id.value_or("")},
                    {"name", in.name},
                    {"data", in.data},
                    {"ts", in.ts.value_or(clock_.now_ms())}};
    });
    std::erase_if(s->runs, [&](const storage::NewRun& r) {
        const Workflow* w = registry_.find(r.workflow_id);
        if (w == nullptr || !Flow::controls(*w)) return false;
        s->flow_runs.push_back(r);
        return true;
    });
    // A paused workflow's run is queued, not handed to this process's idle threads.
    if (!s->runs.empty() && !pauses_.any(s->runs)) {
        WorkerPool::Promise promise(pool_, static_cast<int>(s->runs.size()));
        if (promise) s->claimed = promise.claimed_by();
        s->promise = std::move(promise);
    }
    return s;
}

std::vector<SendResult> Intake::send(storage::Transaction& tx, std::span<const EventInput> in) {
    // Kept until the transaction ends, for deliver().
    auto held = std::make_shared<std::vector<std::unique_ptr<Sending>>>();
    std::vector<Sending*> sends;
    for (const EventInput& e : in) {
        held->push_back(prepare(e));
        sends.push_back(held->back().get());
    }
    write(tx, sends);
    std::vector<SendResult> out;
    for (Sending* s : sends) out.push_back(s->result);
    tx.on_end([this, held](bool committed) {
        for (auto& s : *held) deliver(*s, committed);
    });
    return out;
}

SendResult Intake::send(const EventInput& in) {
    const std::unique_ptr<Sending> s = prepare(in);
    EventWriteItem item(*events_, *s);
    db_.writes().write(item);
    if (item.error) std::rethrow_exception(item.error);
    return s->result;
}

bool Intake::cancel(storage::Transaction& tx, std::string_view run_id,
                    const std::optional<json>& error) {
    const std::vector<std::string> ids =
        store_.cancel_run(tx, run_id, now(), error ? std::optional(dump(*error)) : std::nullopt);
    for (const std::string& id : ids) {
        const auto run = store_.get_run(tx, id);
        const Workflow* w = run ? registry_.find(run->workflow_id) : nullptr;
        if (w == nullptr || !w->on_end) continue;
        const auto ev = store_.get_event(tx, run->event_id);
        announce_end(tx, *w,
                     RunEnded{id, std::string(storage::run_status::kCancelled),
                              ev ? event_json(*ev) : json(nullptr), nullptr,
                              id == run_id && error ? *error : json(nullptr)});
    }
    return !ids.empty();
}

void Intake::announce_end(storage::Transaction& tx, const Workflow& w, const RunEnded& ended) {
    if (!w.on_end) return;
    const std::vector<EventInput> events = w.on_end(ended);
    if (!events.empty()) send(tx, events);
}

std::vector<storage::EventWrite> Intake::event_writes(std::span<Sending* const> sends) const {
    std::vector<storage::EventWrite> events(sends.size());
    const std::int64_t t = clock_.now_ms();
    for (std::size_t i = 0; i < sends.size(); ++i) {
        events[i].event = &sends[i]->event;
        events[i].runs = sends[i]->runs;
        events[i].now = t;
        events[i].claimed = sends[i]->claimed ? &*sends[i]->claimed : nullptr;
    }
    return events;
}

std::vector<storage::EventWrite*> Intake::batchable(std::span<Sending* const> sends,
                                                    std::span<storage::EventWrite> events) const {
    std::vector<storage::EventWrite*> out;
    for (std::size_t i = 0; i < sends.size(); ++i) {
        if (!sends[i]->flow_runs.empty()) continue;
        const bool listens = std::any_of(sends[i]->runs.begin(), sends[i]->runs.end(),
                                         [this](const storage::NewRun& r) {
                                             const Workflow* w = registry_.find(r.workflow_id);
                                             return w != nullptr && !w->cancel_on.empty();
                                         });
        if (!listens) out.push_back(&events[i]);
    }
    return out;
}

std::vector<bool> Intake::take_written(std::span<Sending* const> sends,
                                       std::span<const storage::EventWrite> events) {
    std::vector<bool> written(sends.size());
    for (std::size_t i = 0; i < sends.size(); ++i) {
        if (!events[i].written) continue;
        written[i] = true;
        sends[i]->result =
            SendResult{events[i].inserted.event_id, events[i].inserted.run_ids, false, 0};
    }
    return written;
}

void Intake::write(storage::Transaction& tx, std::span<Sending* const> sends) {
    std::vector<storage::EventWrite> events = event_writes(sends);
    std::vector<storage::EventWrite*> ptrs = batchable(sends, events);
    store_.insert_events(tx, ptrs);
    const std::vector<bool> written = take_written(sends, events);
    for (std::size_t i = 0; i < sends.size(); ++i) {
        if (!written[i]) write_one(tx, *sends[i]);
    }
}

void Intake::write_one(storage::Transaction& tx, Sending& s) {
    const std::int64_t t = now();
    if (s.claimed) s.claimed->claims.clear();  // a batch run again writes them again
    auto ins = store_.insert_event(tx, s.event, s.runs, t, s.claimed ? &*s.claimed : nullptr);
    s.result = SendResult{ins.event_id, ins.run_ids, ins.duplicate, 0};
    if (ins.duplicate) return;
    // The event as waits see it, built only for an event that starts a run listening for
    // cancellation or that a run waits for: most do neither.
    std::optional<json> built;
    auto ev_json = [&]() -> const json& {
        if (!built) {
            built = json{{"id", ins.event_id},
                         {"name", s.event.name},
                         {"data", s.in->data},
                         {"ts", s.event.ts.value_or(t)}};
        }
        return *built;
    };
    listen_for_cancel(tx, s, ev_json);
    for (const storage::NewRun& run : s.flow_runs) {
        const Workflow* w = registry_.find(run.workflow_id);
        if (w == nullptr) continue;
        const auto cancel_previous = [&](const std::string& id) {
            cancel(tx, id,
                   json{{"type", "cancelled"},
                        {"message",
                         fmt::format("replaced by a run for event {} (singleton)", ins.event_id)},
                        {"event_id", ins.event_id}});
        };
        const auto started = flow_.start(tx, *w, run, ev_json(), t, cancel_previous);
        if (!started) continue;
        s.result.run_ids.push_back(started->run_id);
        if (started->created) listen_for_cancel(tx, started->run_id, *w, ev_json());
    }

    const auto waits = store_.waits_for(tx, s.event.name);
    if (waits.empty()) return;
    const json& ev = ev_json();
    const std::string ev_text = dump(ev);
    for (const auto& w : waits) {
        if (!w.match_value) continue;  // the waiting run's own event lacked the field
        const bool cancels = w.step_key.starts_with(kCancelOnKey);
        const auto& own = s.result.run_ids;  // with the runs flow control started or joined
        if (cancels &&
            (w.expires_at <= t || std::find(own.begin(), own.end(), w.run_id) != own.end()))
            continue;  // no longer listening, or one of this event's own runs
        const json want = json::parse(*w.match_value, nullptr, false);
        if (want.is_discarded() || (!w.match_field.empty() && lookup(ev, w.match_field) != want))
            continue;
        if (w.expression && !expression_matches(*w.expression, ev)) continue;
        if (cancels) {
            const json error = {
                {"type", "cancelled"},
                {"message", fmt::format("cancelled by event {} ({})", s.event.name, ins.event_id)},
                {"event_id", ins.event_id}};
            if (cancel(tx, w.run_id, error)) ++s.cancelled;
        } else if (store_.complete_waiting_step(tx, w.run_id, w.step_key, ev_text, std::nullopt,
                                                t)) {
            ++s.result.waits_resumed;
        }
    }
}

void Intake::listen_for_cancel(storage::Transaction& tx, const Sending& s,
                               const std::function<const json&()>& event) {
    for (std::size_t r = 0; r < s.runs.size(); ++r) {
        const Workflow* w = registry_.find(s.runs[r].workflow_id);
        if (w != nullptr && !w->cancel_on.empty())
            listen_for_cancel(tx, s.result.run_ids[r], *w, event());
    }
}

// A wait per event that cancels the run (its step key kCancelOnKey and the entry's
// index): the waits that events are matched with, dropped when the run ends.
void Intake::listen_for_cancel(storage::Transaction& tx, const std::string& run_id,
                               const Workflow& w, const json& ev) {
    const std::int64_t t = now();
    for (std::size_t i = 0; i < w.cancel_on.size(); ++i) {
        const CancelOn& c = w.cancel_on[i];
        const json field = c.match.empty() ? json(true) : lookup(ev, c.match);
        std::optional<std::string> expression;
        if (!c.expression.empty()) expression = Expression::parse(c.expression).bind_event(ev);
        store_.add_wait(
            tx, storage::WaitRecord{
                    run_id, fmt::format("{}{}", kCancelOnKey, i), c.event, c.match,
                    field.is_null() ? std::nullopt : std::optional<std::string>(dump(field)),
                    c.timeout ? t + c.timeout->count() : kNever, std::move(expression)});
    }
}

void Intake::deliver(Sending& s, bool committed) {
    if (!committed) {
        // Rolled back: what was claimed was not written. The promise stays until the send
        // is written again (a shared batch runs its writes again one by one) or ends.
        if (s.claimed) s.claimed->claims.clear();
        return;
    }
    std::vector<storage::Claim> claims;
    if (s.claimed) claims = std::move(s.claimed->claims);
    const bool handed = !claims.empty();
    s.promise.keep(std::move(claims));
    const bool queued = !handed && !s.result.duplicate && !s.result.run_ids.empty();
    if (queued || s.result.waits_resumed > 0 || s.cancelled > 0) pool_.announce();
}

}  // namespace cairn::engine::detail
