#include "cli/ops.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.hpp"
#include "common/time.hpp"
#include "server/api_keys.hpp"
#include "server/views.hpp"

namespace cairn::cli {

using nlohmann::json;

namespace {

void print_json(const json& j) {
    std::cout << j.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
}

std::string short_time(std::int64_t ms) {
    return format_rfc3339(ms).substr(0, 19) + "Z";
}

std::string duration(std::optional<std::int64_t> from, std::optional<std::int64_t> to) {
    if (!from || !to) return "-";
    const auto ms = *to - *from;
    if (ms < 1000) return fmt::format("{}ms", ms);
    if (ms < 60'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000.0);
    return fmt::format("{}m{:02}s", ms / 60'000, (ms / 1000) % 60);
}

std::string one_line(const std::optional<std::string>& stored_json) {
    if (!stored_json) return "";
    json j = json::parse(*stored_json, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("message"))
        return j["message"].get<std::string>();
    return stored_json->substr(0, 120);
}

int not_found(const std::string& id) {
    std::cerr << "cairn: error: no run " << id << '\n';
    return kExitFailed;
}

void print_run_table(const std::vector<storage::RunRecord>& runs) {
    std::cout << fmt::format("{:<36}  {:<20}  {:<9}  {:<22}  {:<20}  {}\n", "RUN", "WORKFLOW",
                             "STATUS", "EVENT", "CREATED", "DURATION");
    for (const auto& r : runs) {
        std::cout << fmt::format("{:<36}  {:<20}  {:<9}  {:<22}  {:<20}  {}\n", r.id, r.workflow_id,
                                 r.status, r.event_name, short_time(r.created_at),
                                 duration(r.started_at, r.ended_at));
    }
}

}  // namespace

std::optional<std::int64_t> parse_duration_ms(const std::string& text) {
    if (text.size() < 2) return std::nullopt;
    const char unit = text.back();
    std::int64_t n = 0;
    for (std::size_t i = 0; i + 1 < text.size(); ++i) {
        if (!std::isdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
        n = n * 10 + (text[i] - '0');
        if (n > 100'000'000) return std::nullopt;
    }
    switch (unit) {
        case 's':
            return n * 1000;
        case 'm':
            return n * 60'000;
        case 'h':
            return n * 3'600'000;
        case 'd':
            return n * 86'400'000;
        default:
            return std::nullopt;
    }
}

// ---- keys -------------------------------------------------------------------------------

int keys_create(storage::Database& db, const std::string& name, const std::string& scope_text,
                const std::string& events_text, bool as_json) {
    auto scope = server::parse_scope(scope_text);
    if (!scope) {
        std::cerr << "cairn: error: --scope must be admin or events\n";
        return kExitUsage;
    }
    std::vector<std::string> events;
    try {
        events = server::parse_event_patterns(events_text);
    } catch (const std::invalid_argument& e) {
        std::cerr << "cairn: error: --events: " << e.what() << '\n';
        return kExitUsage;
    }
    server::ApiKeys keys(db);
    auto [key, secret] = keys.create(name, *scope, now_ms(), events);
    if (as_json) {
        print_json({{"id", key.id},
                    {"name", key.name},
                    {"scope", server::to_string(key.scope)},
                    {"events", key.events},
                    {"key", secret}});
    } else {
        std::cout << secret << '\n';
        std::cerr << fmt::format("created {} key '{}' ({}); it is shown only this once\n",
                                 server::to_string(key.scope), key.name, key.id);
    }
    return kExitOk;
}

int keys_list(storage::Database& db, bool as_json) {
    server::ApiKeys keys(db);
    const auto all = keys.list();
    if (as_json) {
        json out = json::array();
        for (const auto& k : all) {
            out.push_back({{"id", k.id},
                           {"name", k.name},
                           {"scope", server::to_string(k.scope)},
                           {"prefix", k.prefix},
                           {"events", k.events},
                           {"created_at", format_rfc3339(k.created_at)},
                           {"revoked_at",
                            k.revoked_at ? json(format_rfc3339(*k.revoked_at)) : json(nullptr)}});
        }
        print_json(out);
        return kExitOk;
    }
    std::cout << fmt::format("{:<36}  {:<20}  {:<6}  {:<10}  {:<20}  {}\n", "ID", "NAME", "SCOPE",
                             "PREFIX", "CREATED", "REVOKED");
    for (const auto& k : all) {
        std::cout << fmt::format("{:<36}  {:<20}  {:<6}  {:<10}  {:<20}  {}\n", k.id, k.name,
                                 server::to_string(k.scope), k.prefix, short_time(k.created_at),
                                 k.revoked_at ? short_time(*k.revoked_at) : "-");
    }
    return kExitOk;
}

int keys_revoke(storage::Database& db, const std::string& id) {
    server::ApiKeys keys(db);
    if (!keys.revoke(id, now_ms())) {
        std::cerr << "cairn: error: no active key " << id << '\n';
        return kExitFailed;
    }
    std::cout << "revoked " << id << '\n';
    return kExitOk;
}

// ---- runs -------------------------------------------------------------------------------

int runs_list(engine::Engine& engine, const storage::RunFilter& filter,
              const std::optional<std::string>& cursor, int limit, bool as_json) {
    auto page = engine.store().list_runs(filter, cursor, limit);
    if (as_json) {
        json runs = json::array();
        for (const auto& r : page.runs) runs.push_back(server::run_json(r));
        print_json({{"runs", runs},
                    {"next_cursor", page.next_cursor ? json(*page.next_cursor) : json(nullptr)}});
        return kExitOk;
    }
    print_run_table(page.runs);
    if (page.next_cursor) std::cout << fmt::format("(more: --cursor {})\n", *page.next_cursor);
    return kExitOk;
}

int runs_show(engine::Engine& engine, const std::string& id, bool as_json) {
    auto state = engine.store().load(id);
    if (!state) return not_found(id);
    const auto attempts = engine.store().attempts(id);
    const json held = engine.held_back(state->run);
    if (as_json) {
        json j = server::run_detail_json(*state, attempts);
        j["held"] = held;
        print_json(j);
        return kExitOk;
    }
    const auto& r = state->run;
    std::cout << fmt::format(
        "run       {}\nworkflow  {} (version {})\nstatus    {}\nevent     {} {}\n", r.id,
        r.workflow_id, r.version, r.status, state->event.name, state->event.id);
    if (!held.is_null())
        std::cout << fmt::format("held      {}\n", held["message"].get<std::string>());
    std::cout << fmt::format("created   {}\nduration  {}\n", format_rfc3339(r.created_at),
                             duration(r.started_at, r.ended_at));
    if (r.replay_of) std::cout << fmt::format("replay of {}\n", *r.replay_of);
    if (r.output) std::cout << fmt::format("output    {}\n", r.output->substr(0, 200));
    if (r.error) std::cout << fmt::format("error     {}\n", one_line(r.error));
    std::cout << "\ntimeline\n";
    const std::int64_t origin = r.started_at.value_or(r.created_at);
    for (const auto& s : state->steps) {
        std::cout << fmt::format("  {:>3}  {:<24} {:<6} {:<10} +{:<8} {:<8} attempts {}\n",
                                 s.seq + 1, s.key, s.kind, s.status,
                                 s.started_at ? duration(origin, s.started_at) : "-",
                                 duration(s.started_at, s.ended_at), s.attempts);
        for (const auto& a : attempts) {
            if (a.step_key != s.key || a.outcome == "completed") continue;
            std::cout << fmt::format("         attempt {} {}: {}\n", a.attempt, a.outcome,
                                     one_line(a.error));
        }
    }
    return kExitOk;
}

int runs_cancel(engine::Engine& engine, const std::string& id, bool as_json) {
    if (!engine.cancel(id)) {
        if (!engine.store().get_run(id)) return not_found(id);
        std::cerr << "cairn: error: run " << id << " has already ended\n";
        return kExitFailed;
    }
    if (as_json)
        print_json(server::run_json(*engine.store().get_run(id)));
    else
        std::cout << "cancelled " << id << '\n';
    return kExitOk;
}

int runs_retry(engine::Engine& engine, const std::string& id, bool as_json) {
    switch (engine.retry(id)) {
        case storage::RunStore::RetryResult::not_found:
            return not_found(id);
        case storage::RunStore::RetryResult::not_ended:
            std::cerr << "cairn: error: run " << id << " is not failed or cancelled\n";
            return kExitFailed;
        case storage::RunStore::RetryResult::ok:
            break;
    }
    if (as_json)
        print_json(server::run_json(*engine.store().get_run(id)));
    else
        std::cout << "re-queued " << id << '\n';
    return kExitOk;
}

int runs_bulk(engine::Engine& engine, engine::Engine::BulkOperation op,
              const storage::RunFilter& filter, bool yes, bool as_json) {
    using Op = engine::Engine::BulkOperation;
    const char* verb = op == Op::cancel ? "cancel" : op == Op::retry ? "retry" : "replay";
    const char* field = op == Op::cancel ? "cancelled" : op == Op::retry ? "retried" : "replayed";
    const std::int64_t matched = engine.store().count_runs(filter);
    if (matched == 0) {
        if (as_json)
            print_json({{"matched", 0}, {field, json::array()}});
        else
            std::cout << "no runs match\n";
        return kExitOk;
    }
    if (!yes) {
        std::cerr << fmt::format("{} {} run(s)? [y/N] ", verb, matched);
        std::string answer;
        if (!std::getline(std::cin, answer) ||
            (answer != "y" && answer != "Y" && answer != "yes")) {
            std::cerr << fmt::format("cairn: nothing done (pass --yes to skip the question)\n");
            return kExitFailed;
        }
    }
    const auto done = engine.bulk(op, filter, [verb](std::int64_t handled, std::int64_t total) {
        std::cerr << fmt::format("{}: {}/{} runs\n", verb, handled, total);
    });
    if (as_json) {
        print_json({{"matched", done.matched}, {field, done.done}});
    } else {
        std::cout << fmt::format("{} {} of {} matching run(s)\n", field, done.done.size(),
                                 done.matched);
    }
    return kExitOk;
}

int runs_replay(engine::Engine& engine, const std::string& id,
                const std::optional<std::string>& from_step, const std::optional<std::string>& data,
                bool as_json) {
    std::optional<json> edited;
    if (data) {
        edited = json::parse(*data, nullptr, false);
        if (edited->is_discarded()) {
            std::cerr << "cairn: error: --data is not valid JSON\n";
            return kExitUsage;
        }
    }
    auto r = engine.replay(id, from_step, edited);
    if (auto* err = std::get_if<storage::RunStore::ReplayError>(&r)) {
        if (*err == storage::RunStore::ReplayError::not_found) return not_found(id);
        std::cerr << "cairn: error: run " << id << " has no step '" << from_step.value_or("")
                  << "'\n";
        return kExitFailed;
    }
    const auto& new_id = std::get<std::string>(r);
    if (as_json)
        print_json(server::run_json(*engine.store().get_run(new_id)));
    else
        std::cout << fmt::format("started {} (replay of {}{})\n", new_id, id,
                                 from_step ? " from " + *from_step : "");
    return kExitOk;
}

// ---- events and workflows ---------------------------------------------------------------

int events_send(engine::Engine& engine, const std::string& name, const std::string& data,
                const std::optional<std::string>& idempotency_key, bool as_json) {
    json parsed = json::parse(data, nullptr, false);
    if (parsed.is_discarded()) {
        std::cerr << "cairn: error: --data is not valid JSON\n";
        return kExitUsage;
    }
    if (name.empty()) {
        std::cerr << "cairn: error: the event name must not be empty\n";
        return kExitUsage;
    }
    engine::EventInput e{name, parsed};
    e.idempotency_key = idempotency_key;
    auto sent = engine.send(e);
    if (as_json) {
        print_json(
            {{"id", sent.event_id}, {"run_ids", sent.run_ids}, {"duplicate", sent.duplicate}});
    } else {
        std::cout << fmt::format(
            "{} {} ({} run(s) started{})\n", sent.duplicate ? "duplicate of" : "sent",
            sent.event_id, sent.duplicate ? 0 : sent.run_ids.size(),
            sent.waits_resumed ? fmt::format(", {} waiting run(s) resumed", sent.waits_resumed)
                               : "");
        for (const auto& id : sent.run_ids) std::cout << "  run " << id << '\n';
    }
    return kExitOk;
}

int events_list(engine::Engine& engine, const std::optional<std::string>& name, int limit,
                bool as_json) {
    auto page = engine.store().list_events(name, std::nullopt, limit);
    if (as_json) {
        json events = json::array();
        for (const auto& e : page.events) {
            json j = server::event_json(e.event);
            j["run_ids"] = e.run_ids;
            events.push_back(std::move(j));
        }
        print_json({{"events", events},
                    {"next_cursor", page.next_cursor ? json(*page.next_cursor) : json(nullptr)}});
        return kExitOk;
    }
    std::cout << fmt::format("{:<36}  {:<24}  {:<20}  {}\n", "EVENT", "NAME", "RECEIVED", "RUNS");
    for (const auto& e : page.events) {
        std::cout << fmt::format("{:<36}  {:<24}  {:<20}  {}\n", e.event.id, e.event.name,
                                 short_time(e.event.received_at), e.run_ids.size());
    }
    return kExitOk;
}

int gc_runs(engine::Engine& engine, std::int64_t ended_before,
            const std::vector<std::string>& statuses, bool dry_run, bool as_json) {
    if (dry_run) {
        const auto n = engine.store().count_collectable(ended_before, statuses);
        if (as_json)
            print_json({{"matched", n}});
        else
            std::cout << fmt::format("{} run(s) ended before {} would be deleted\n", n,
                                     format_rfc3339(ended_before));
        return kExitOk;
    }
    const auto done = engine.collect(ended_before, statuses, [](const auto& so_far) {
        std::cerr << fmt::format("gc: {} runs and {} events deleted so far\n", so_far.runs,
                                 so_far.events);
    });
    if (as_json)
        print_json({{"deleted_runs", done.runs}, {"deleted_events", done.events}});
    else
        std::cout << fmt::format("deleted {} run(s) and {} event(s)\n", done.runs, done.events);
    return kExitOk;
}

int workflows_pause(engine::Engine& engine, const std::string& id, bool pause, bool as_json) {
    const json listing = engine.workflow_listing();
    if (std::none_of(listing.begin(), listing.end(),
                     [&](const json& w) { return w["id"] == id; })) {
        std::cerr << fmt::format("cairn: error: no process has registered workflow '{}'\n", id);
        return kExitFailed;
    }
    const bool changed = pause ? engine.pause(id) : engine.resume(id);
    const bool paused = engine.store().paused_workflows().contains(id);
    if (as_json) {
        print_json({{"id", id}, {"paused", paused}, {"changed", changed}});
    } else if (changed) {
        std::cout << fmt::format("{} {}\n", pause ? "paused" : "resumed", id);
    } else {
        std::cout << fmt::format("{} was already {}\n", id, pause ? "paused" : "running");
    }
    return kExitOk;
}

int workflows_list(engine::Engine& engine, bool as_json) {
    std::map<std::string, std::map<std::string, std::int64_t>> counts;
    for (const auto& c : engine.store().counts_by_workflow_and_status())
        counts[c.workflow_id][c.status] = c.runs;
    json listing = engine.workflow_listing();
    if (as_json) {
        for (json& w : listing) {
            w["max_attempts"] = w["options"]["max_attempts"];
            w["counts"] = counts[w["id"].get<std::string>()];
        }
        print_json({{"workflows", listing}});
        return kExitOk;
    }
    std::cout << fmt::format("{:<28}  {:<8}  {:<16}  {:<7}  {:<28}  {:<20}  {:<24}  {}\n",
                             "WORKFLOW", "VERSION", "APP", "STATE", "TRIGGERS", "NEXT TICK",
                             "PROCESSES", "RUNS BY STATUS");
    for (const json& w : listing) {
        const auto id = w["id"].get<std::string>();
        std::string by_status;
        for (const auto& [status, n] : counts[id]) by_status += fmt::format("{}={} ", status, n);
        // Each process that registered it, by name, marked when it is not running.
        std::vector<std::string> names;
        for (const json& p : w["processes"]) {
            auto name = p["name"].get<std::string>();
            if (!p["live"].get<bool>())
                name += p["stopped_at"].is_null() ? "(silent)" : "(stopped)";
            if (std::find(names.begin(), names.end(), name) == names.end())
                names.push_back(std::move(name));
        }
        auto triggers = w["triggers"].get<std::vector<std::string>>();
        if (w.contains("cron") && w["cron"].is_string())
            triggers.push_back(fmt::format("cron({})", w["cron"].get<std::string>()));
        const std::string next = w.contains("next_tick") && w["next_tick"].is_number()
                                     ? short_time(w["next_tick"].get<std::int64_t>())
                                     : "-";
        std::cout << fmt::format(
            "{:<28}  {:<8}  {:<16}  {:<7}  {:<28}  {:<20}  {:<24}  {}\n", id,
            w["version"].get<std::string>(),
            w.contains("app") && w["app"].is_string() ? w["app"].get<std::string>() : "-",
            w.value("paused", false) ? "paused" : "active",
            triggers.empty() ? "-" : fmt::format("{}", fmt::join(triggers, ",")), next,
            names.empty() ? "-" : fmt::format("{}", fmt::join(names, ",")),
            by_status.empty() ? "-" : by_status);
        if (w.contains("flow_control") && w["flow_control"].is_object())
            std::cout << fmt::format("  flow: {}\n", w["flow_control"].value("summary", ""));
    }
    return kExitOk;
}

}  // namespace cairn::cli
