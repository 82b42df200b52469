#include "cli/app.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/ops.hpp"
#include "cli/ticket_commands.hpp"
#include "common/time.hpp"
#include "common/version.hpp"
#include "engine/engine.hpp"
#include "examples/hello_workflow.hpp"
#include "examples/notes_plugin.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "server/api_keys.hpp"
#include "server/http_server.hpp"
#include "server/metrics.hpp"
#include "server/engine_api.hpp"
#include "storage/database.hpp"
#include "storage/migrations.hpp"
#include "storage/run_store.hpp"
#include "workflows/ticket_workflows.hpp"

namespace cairn::cli {
namespace {

constexpr const char* kDefaultDb = "sqlite://cairn.db";
constexpr const char* kDefaultListen = "127.0.0.1:8080";

using Plugins = std::vector<std::unique_ptr<plugins::Plugin>>;

// Every plugin compiled into this binary; the example plugin only with --examples.
Plugins make_plugins(bool with_examples) {
    Plugins out;
    out.push_back(std::make_unique<ticket::TicketPlugin>(workflows::register_ticket_workflows));
    if (with_examples) out.push_back(examples::make_notes_plugin());
    return out;
}

// Every component's migrations, in dependency order: the engine's, the server's, then
// each plugin's.
std::vector<storage::Component> all_components(const Plugins& plugins) {
    std::vector<storage::Component> out = {storage::run_store_component(),
                                           server::api_keys_component()};
    for (const auto& p : plugins)
        for (const auto& c : p->components()) out.push_back(c);
    return out;
}

// A failure that ends the command with `code` after printing `message` on one line.
struct Exit {
    int code;
    std::string message;
};

void setup_logging() {
    auto logger = spdlog::stderr_color_mt("cairn");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    // Read once at start-up, before any thread exists.
    const char* level = std::getenv("CAIRN_LOG_LEVEL");  // NOLINT(concurrency-mt-unsafe)
    spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
}

std::unique_ptr<storage::Database> open_database(const std::string& url) {
    try {
        return storage::Database::open(url);
    } catch (const storage::ConfigError& e) {
        throw Exit{kExitUsage, e.what()};
    } catch (const storage::StorageError& e) {
        throw Exit{kExitUsage, e.what()};
    }
}

// Engine settings shared by serve and worker.
struct WorkerFlags {
    int workers = 4;
    int lease_ms = 30'000;
    bool examples = false;
};

void add_worker_flags(CLI::App* cmd, WorkerFlags& flags, int min_workers) {
    cmd->add_option("--workers", flags.workers, "Worker threads executing runs")
        ->envname("CAIRN_WORKERS")
        ->check(CLI::Range(min_workers, 256))
        ->capture_default_str();
    cmd->add_option("--lease-ms", flags.lease_ms,
                    "Lease on a claimed run, renewed every third of it")
        ->envname("CAIRN_LEASE_MS")
        ->check(CLI::Range(100, 3'600'000))
        ->capture_default_str();
    cmd->add_flag("--examples", flags.examples,
                  "Register the example workflows (hello on example/hello)")
        ->envname("CAIRN_EXAMPLES");
}

int migrate_apply(storage::Database& db, const Plugins& plugins) {
    storage::Migrator migrator(db, all_components(plugins));
    const int n = migrator.apply();
    spdlog::info("migrations: {} applied", n);
    return n;
}

// The crash tests' seam (tests/e2e/crash_test.cpp): with CAIRN_CRASH_AFTER_STEPS=N, the
// process ends abruptly, as if killed, once N step records have committed.
void crash_after_steps(engine::Engine& engine) {
    const char* text = std::getenv("CAIRN_CRASH_AFTER_STEPS");  // NOLINT(concurrency-mt-unsafe)
    if (text == nullptr || std::atoll(text) <= 0) return;
    const std::int64_t limit = std::atoll(text);
    engine.on_step_recorded([limit, seen = std::make_shared<std::atomic<std::int64_t>>(0)] {
        if (++*seen >= limit) {
            spdlog::warn("CAIRN_CRASH_AFTER_STEPS={} reached: exiting abruptly", limit);
            std::_Exit(137);
        }
    });
}

// The database, migrated, with the engine and started plugins whose workflows are
// registered. Members are destroyed bottom-up: the engine (and its workers) before the
// plugins whose services the workflows use.
struct Runtime {
    std::unique_ptr<storage::Database> db;
    engine::SystemClock clock;
    Plugins plugins;
    std::unique_ptr<engine::Engine> engine;
};

std::unique_ptr<Runtime> open_runtime(const std::string& db_url, bool with_examples) {
    auto rt = std::make_unique<Runtime>();
    rt->db = open_database(db_url);
    rt->plugins = make_plugins(with_examples);
    migrate_apply(*rt->db, rt->plugins);
    rt->engine = std::make_unique<engine::Engine>(*rt->db, rt->clock);
    crash_after_steps(*rt->engine);
    for (auto& p : rt->plugins) {
        try {
            p->start({*rt->db, *rt->engine});
        } catch (const std::invalid_argument& e) {
            throw Exit{kExitUsage, fmt::format("{} plugin: {}", p->name(), e.what())};
        }
    }
    if (with_examples) examples::register_examples(*rt->engine);
    for (auto& p : rt->plugins) p->register_workflows(*rt->engine);
    return rt;
}

engine::WorkerOptions worker_options(const WorkerFlags& flags) {
    engine::WorkerOptions o;
    o.threads = flags.workers;
    o.lease = std::chrono::milliseconds(flags.lease_ms);
    return o;
}


int cmd_serve(const std::string& db_url, const std::string& listen, std::size_t threads,
              int read_timeout_ms, const WorkerFlags& flags) {
    // Check the URL and bind the port before touching the database, so a typo or a busy
    // port creates nothing.
    try {
        storage::parse_database_url(db_url);
    } catch (const storage::ConfigError& e) {
        throw Exit{kExitUsage, e.what()};
    }
    server::ServerOptions options;
    options.listen = listen;
    options.work_threads = threads;
    options.read_timeout = std::chrono::milliseconds(read_timeout_ms);
    // The router needs the database, which is opened only after the port is bound; the
    // server accepts nothing before run(), when the router exists.
    std::unique_ptr<server::Router> router;
    std::unique_ptr<server::HttpServer> http;
    try {
        http = std::make_unique<server::HttpServer>(
            options, [&router](const server::Request& req) { return router->dispatch(req); });
    } catch (const server::ListenError& e) {
        throw Exit{kExitUsage, e.what()};
    }
    auto rt = open_runtime(db_url, flags.examples);
    auto& db = rt->db;
    auto& engine = *rt->engine;
    server::ApiKeys keys(*db);
    server::Metrics metrics;
    router = server::make_router(*db, engine, keys, metrics);
    for (auto& p : rt->plugins) p->add_routes(*router);
    if (flags.workers > 0) engine.start(worker_options(flags));
    spdlog::info("cairn {} serving http://{} on {} ({})", kVersion, http->local_address(),
                 storage::to_string(db->backend()), db->url());
    http->run();
    engine.stop();  // running executions yield at their next step and hand their runs back
    spdlog::info("stopped");
    return kExitOk;
}

int cmd_worker(const std::string& db_url, const WorkerFlags& flags) {
    auto rt = open_runtime(db_url, flags.examples);
    auto& db = rt->db;
    auto& engine = *rt->engine;
    // Block the stop signals before any thread starts, so only sigwait below sees them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    engine.start(worker_options(flags));
    spdlog::info("cairn {} worker {} on {} ({})", kVersion, engine.worker_id(),
                 storage::to_string(db->backend()), db->url());
    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("received signal {}; stopping", signal);
    engine.stop();
    return kExitOk;
}

int cmd_migrate(const std::string& db_url, bool status_only, bool as_json, bool with_examples) {
    if (status_only) {
        // --status changes nothing, so it must not create a missing SQLite file either.
        storage::DatabaseUrl url;
        try {
            url = storage::parse_database_url(db_url);
        } catch (const storage::ConfigError& e) {
            throw Exit{kExitUsage, e.what()};
        }
        if (url.backend == storage::Backend::sqlite && url.path != ":memory:" &&
            !std::filesystem::exists(url.path)) {
            throw Exit{kExitUsage,
                       fmt::format("no database at {} (cairn migrate creates it)", url.path)};
        }
    }
    auto db = open_database(db_url);
    const auto plugins = make_plugins(with_examples);
    storage::Migrator migrator(*db, all_components(plugins));
    if (!status_only) migrate_apply(*db, plugins);
    const auto states = migrator.status();
    if (as_json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& s : states) {
            out.push_back(
                {{"component", s.component},
                 {"version", s.version},
                 {"name", s.name},
                 {"status", s.applied_at ? "applied" : "pending"},
                 {"applied_at", s.applied_at ? nlohmann::json(format_rfc3339(*s.applied_at))
                                             : nlohmann::json(nullptr)}});
        }
        std::cout << out.dump(2) << '\n';
    } else {
        std::cout << fmt::format("{:<12} {:>7}  {:<8} {:<24}  {}\n", "COMPONENT", "VERSION",
                                 "STATUS", "APPLIED AT", "NAME");
        for (const auto& s : states) {
            std::cout << fmt::format("{:<12} {:>7}  {:<8} {:<24}  {}\n", s.component, s.version,
                                     s.applied_at ? "applied" : "pending",
                                     s.applied_at ? format_rfc3339(*s.applied_at) : "-", s.name);
        }
    }
    return kExitOk;
}

}  // namespace

int run(int argc, char** argv) {
    CLI::App app{"Cairn: a durable workflow engine with a support-ticket plugin", "cairn"};
    app.set_version_flag("--version", std::string(kVersion));
    app.require_subcommand(1);

    std::string db_url = kDefaultDb;
    auto add_db = [&db_url](CLI::App* cmd) {
        cmd->add_option("--db", db_url,
                        "Database URL: sqlite://PATH, sqlite::memory: or postgres://...")
            ->envname("CAIRN_DB")
            ->capture_default_str();
    };

    auto* serve =
        app.add_subcommand("serve", "Run the HTTP server on the database (migrating it first)");
    std::string listen = kDefaultListen;
    std::size_t threads = 4;
    add_db(serve);
    serve->add_option("--listen", listen, "HOST:PORT to listen on (port 0 picks a free one)")
        ->envname("CAIRN_LISTEN")
        ->capture_default_str();
    serve->add_option("--threads", threads, "Threads for request handlers")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();

    int read_timeout_ms = 30'000;
    serve
        ->add_option("--read-timeout-ms", read_timeout_ms,
                     "Time allowed to receive a whole request, and to idle between requests")
        ->check(CLI::Range(100, 3'600'000))
        ->capture_default_str();
    WorkerFlags serve_flags;
    add_worker_flags(serve, serve_flags, 0);

    auto* worker =
        app.add_subcommand("worker", "Run workers only (no HTTP): claim and execute runs");
    WorkerFlags worker_flags;
    add_db(worker);
    add_worker_flags(worker, worker_flags, 1);

    auto* migrate = app.add_subcommand("migrate", "Apply pending schema migrations and list them");
    bool status_only = false;
    bool as_json = false;
    add_db(migrate);
    migrate->add_flag("--status", status_only,
                      "Only list applied and pending migrations; change nothing");
    migrate->add_flag("--json", as_json, "Print JSON instead of a table");
    bool examples = false;
    migrate->add_flag("--examples", examples, "Include the example plugin's migrations")
        ->envname("CAIRN_EXAMPLES");

    // ---- operating runs: keys, runs, events, workflows (docs/cli.md) ----
    auto common = [&](CLI::App* cmd, bool with_engine) {
        add_db(cmd);
        cmd->add_flag("--json", as_json, "Print JSON instead of a table");
        if (with_engine) {
            cmd->add_flag("--examples", examples, "Include the example workflows in the registry")
                ->envname("CAIRN_EXAMPLES");
        }
    };
    std::function<int()> action;

    auto* keys = app.add_subcommand("keys", "Manage API keys for the engine's HTTP API")
                     ->require_subcommand(1);
    std::string key_name, key_scope = "admin", key_id;
    auto* keys_create_cmd = keys->add_subcommand("create", "Create a key; prints the secret once");
    common(keys_create_cmd, false);
    keys_create_cmd->add_option("--name", key_name, "What the key is for")->required();
    keys_create_cmd
        ->add_option("--scope", key_scope, "admin (every route) or events (sending events only)")
        ->capture_default_str();
    auto* keys_list_cmd = keys->add_subcommand("list", "List keys (never their secrets)");
    common(keys_list_cmd, false);
    auto* keys_revoke_cmd = keys->add_subcommand("revoke", "Revoke a key at once");
    common(keys_revoke_cmd, false);
    keys_revoke_cmd->add_option("id", key_id, "Key id (see keys list)")->required();

    auto* runs =
        app.add_subcommand("runs", "Inspect and operate workflow runs")->require_subcommand(1);
    storage::RunFilter filter;
    std::string since, cursor, run_id, from_step;
    int limit = 50;
    bool yes = false;
    auto add_filters = [&](CLI::App* cmd) {
        cmd->add_option("--workflow", filter.workflow_id, "Only runs of this workflow");
        cmd->add_option("--status", filter.status,
                        "queued, running, sleeping, waiting, completed, failed, cancelled");
        cmd->add_option("--event", filter.event_name, "Only runs started by events of this name");
        cmd->add_option("--since", since,
                        "Only runs created within this long, e.g. 90s, 15m, 1h, 2d");
    };
    auto* runs_list_cmd = runs->add_subcommand("list", "List runs, newest first");
    common(runs_list_cmd, true);
    add_filters(runs_list_cmd);
    runs_list_cmd->add_option("--search", filter.search,
                              "A run id or event id, or a prefix of one");
    runs_list_cmd->add_option("--cursor", cursor,
                              "Continue after this run id (printed when there are more)");
    runs_list_cmd->add_option("--limit", limit, "Runs per page")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    auto* runs_show_cmd =
        runs->add_subcommand("show", "Show a run, its event and the timeline of its steps");
    common(runs_show_cmd, true);
    runs_show_cmd->add_option("id", run_id, "Run id")->required();
    auto* runs_cancel_cmd =
        runs->add_subcommand("cancel", "Cancel a run (it stops at its next step boundary)");
    common(runs_cancel_cmd, true);
    runs_cancel_cmd->add_option("id", run_id, "Run id")->required();
    auto* runs_retry_cmd =
        runs->add_subcommand("retry",
                             "Re-queue a failed run keeping its completed steps; or, with filters, "
                             "every matching failed run");
    common(runs_retry_cmd, true);
    runs_retry_cmd->add_option("id", run_id, "Run id (omit to retry by filters)");
    add_filters(runs_retry_cmd);
    runs_retry_cmd->add_flag("--yes,-y", yes, "Do not ask before a bulk retry");
    auto* runs_replay_cmd = runs->add_subcommand("replay", "Start a new run on the same event");
    common(runs_replay_cmd, true);
    runs_replay_cmd->add_option("id", run_id, "Run id")->required();
    runs_replay_cmd->add_option("--from-step", from_step,
                                "Copy the steps before this one; run it and the rest again");

    auto* events = app.add_subcommand("events", "Send and list events")->require_subcommand(1);
    std::string event_name, event_data = "{}", idempotency_key;
    auto* events_send_cmd =
        events->add_subcommand("send", "Send an event (starts the workflows it triggers)");
    common(events_send_cmd, true);
    events_send_cmd->add_option("name", event_name, "Event name, e.g. example/hello")->required();
    events_send_cmd->add_option("--data", event_data, "Event data as JSON")->capture_default_str();
    events_send_cmd->add_option("--idempotency-key", idempotency_key,
                                "A second event with this key starts nothing");
    auto* events_list_cmd =
        events->add_subcommand("list", "List recent events and the runs they started");
    common(events_list_cmd, true);
    events_list_cmd->add_option("--name", event_name, "Only events of this name");
    events_list_cmd->add_option("--limit", limit, "How many")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();

    auto* workflows =
        app.add_subcommand("workflows", "List registered workflows")->require_subcommand(1);
    auto* workflows_list_cmd =
        workflows->add_subcommand("list", "Registered workflows with run counts by status");
    common(workflows_list_cmd, true);

    // ---- the ticket plugin: users and mail (docs/tickets.md) ----
    auto* users = app.add_subcommand("users", "Manage ticket-system users")->require_subcommand(1);
    NewUser new_user;
    auto* users_create_cmd =
        users->add_subcommand("create", "Create a user, e.g. the first admin: --role admin");
    common(users_create_cmd, false);
    users_create_cmd->add_option("--email", new_user.email, "Email address (the login)")->required();
    users_create_cmd->add_option("--name", new_user.name, "Display name (default: from the email)");
    users_create_cmd->add_option("--role", new_user.role, "user, moderator or admin")
        ->check(CLI::IsMember({"user", "moderator", "admin"}))
        ->capture_default_str();
    users_create_cmd->add_option("--skills", new_user.skills,
                                 "Comma-separated skills, e.g. react,postgresql");
    users_create_cmd->add_option("--password", new_user.password,
                                 "Password (8-128 characters; generated and printed when omitted)");
    users_create_cmd->add_flag("--password-stdin", new_user.password_stdin,
                               "Read the password from the first line of standard input");

    auto* mail = app.add_subcommand("mail", "Mail the system has sent")->require_subcommand(1);
    std::string mail_to;
    auto* mail_list_cmd = mail->add_subcommand("list", "Recorded mails, newest first");
    common(mail_list_cmd, false);
    mail_list_cmd->add_option("--to", mail_to, "Only mails to this address");
    mail_list_cmd->add_option("--limit", limit, "How many")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "cairn: " << e.what() << " (see cairn --help)\n";
        return kExitUsage;
    }

    setup_logging();
    auto opt = [](const std::string& v) {
        return v.empty() ? std::nullopt : std::optional<std::string>(v);
    };
    try {
        if (serve->parsed())
            return cmd_serve(db_url, listen, threads, read_timeout_ms, serve_flags);
        if (worker->parsed()) return cmd_worker(db_url, worker_flags);
        if (migrate->parsed()) return cmd_migrate(db_url, status_only, as_json, examples);

        auto rt = open_runtime(db_url, examples);
        auto& db = rt->db;
        auto& engine = *rt->engine;
        const auto& clock = rt->clock;
        if (keys_create_cmd->parsed()) return keys_create(*db, key_name, key_scope, as_json);
        if (keys_list_cmd->parsed()) return keys_list(*db, as_json);
        if (keys_revoke_cmd->parsed()) return keys_revoke(*db, key_id);
        if (users_create_cmd->parsed()) return users_create(*db, engine, new_user, as_json);
        if (mail_list_cmd->parsed()) return mail_list(*db, opt(mail_to), limit, as_json);
        if (!since.empty()) {
            auto ms = parse_duration_ms(since);
            if (!ms)
                throw Exit{kExitUsage,
                           fmt::format("--since {}: expected a number and s, m, h or d", since)};
            filter.created_from = clock.now_ms() - *ms;
        }
        if (runs_list_cmd->parsed()) return runs_list(engine, filter, opt(cursor), limit, as_json);
        if (runs_show_cmd->parsed()) return runs_show(engine, run_id, as_json);
        if (runs_cancel_cmd->parsed()) return runs_cancel(engine, run_id, as_json);
        if (runs_retry_cmd->parsed()) {
            if (!run_id.empty()) return runs_retry(engine, run_id, as_json);
            if (!filter.workflow_id && !filter.status && !filter.event_name &&
                !filter.created_from) {
                throw Exit{kExitUsage,
                           "runs retry needs a run id, or filters (--status, --workflow, --event, "
                           "--since)"};
            }
            if (!filter.status) filter.status = "failed";
            return runs_retry_bulk(engine, filter, yes, as_json);
        }
        if (runs_replay_cmd->parsed()) return runs_replay(engine, run_id, opt(from_step), as_json);
        if (events_send_cmd->parsed())
            return events_send(engine, event_name, event_data, opt(idempotency_key), as_json);
        if (events_list_cmd->parsed()) return events_list(engine, opt(event_name), limit, as_json);
        if (workflows_list_cmd->parsed()) return workflows_list(engine, as_json);
    } catch (const Exit& e) {
        std::cerr << "cairn: error: " << e.message << '\n';
        return e.code;
    } catch (const storage::ConnectionError& e) {
        std::cerr << "cairn: error: " << e.what() << '\n';
        return kExitUsage;
    } catch (const std::exception& e) {
        std::cerr << "cairn: error: " << e.what() << '\n';
        return kExitFailed;
    }
    return kExitUsage;
}

}  // namespace cairn::cli
