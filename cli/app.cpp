#include "cli/app.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/logging.hpp"
#include "cli/ops.hpp"
#include "cli/sdk_commands.hpp"
#include "cli/ticket_commands.hpp"
#include "common/time.hpp"
#include "common/version.hpp"
#include "engine/database_clock.hpp"
#include "engine/engine.hpp"
#include "examples/hello_workflow.hpp"
#include "examples/notes_plugin.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "sdk/apps.hpp"
#include "sdk/signing.hpp"
#include "server/api_keys.hpp"
#include "server/engine_api.hpp"
#include "server/http_server.hpp"
#include "server/metrics.hpp"
#include "server/sdk_api.hpp"
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
                                           server::api_keys_component(), sdk::apps_component()};
    for (const auto& p : plugins)
        for (const auto& c : p->components()) out.push_back(c);
    return out;
}

// A failure that ends the command with `code` after printing `message` on one line.
struct Exit {
    int code;
    std::string message;
};

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
    std::string retention = "30d";
    bool examples = false;
    bool dev = false;  // SDK apps in dev mode: no signatures
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
    cmd->add_option("--retention", flags.retention,
                    "Delete runs that ended longer ago than this (e.g. 30d, 12h; 0 keeps all)")
        ->envname("CAIRN_RETENTION")
        ->check([](const std::string& v) {
            return v == "0" || parse_duration_ms(v) ? std::string()
                                                    : "expected 0 or a number and s, m, h or d";
        })
        ->capture_default_str();
    cmd->add_flag("--examples", flags.examples,
                  "Register the example workflows (hello on example/hello)")
        ->envname("CAIRN_EXAMPLES");
    cmd->add_flag("--dev", flags.dev,
                  "SDK apps in dev mode, as Inngest's dev server: no signatures, any event key "
                  "(docs/sdk.md)")
        ->envname("CAIRN_DEV");
}

// CAIRN_SIGNING_KEY, when set: SDK apps in signed mode (docs/sdk.md).
std::optional<sdk::SigningKey> signing_key() {
    const char* text = std::getenv("CAIRN_SIGNING_KEY");  // NOLINT(concurrency-mt-unsafe)
    if (text == nullptr || *text == '\0') return std::nullopt;
    auto key = sdk::SigningKey::parse(text);
    if (!key)
        throw Exit{kExitUsage,
                   "CAIRN_SIGNING_KEY must be signkey-<env>-<hex>, the app's INNGEST_SIGNING_KEY"};
    return key;
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

// CAIRN_CLOCK_SKEW_MS=N moves this process's clock N ms ahead: a debug knob for tests of
// workers whose clocks disagree.
std::int64_t clock_skew_ms() {
    const char* text = std::getenv("CAIRN_CLOCK_SKEW_MS");  // NOLINT(concurrency-mt-unsafe)
    return text == nullptr ? 0 : std::atoll(text);
}

// The database, migrated, with the engine and started plugins whose workflows are
// registered. Members are destroyed bottom-up: the engine (and its workers) before the
// plugins whose services the workflows use.
struct Runtime {
    std::unique_ptr<storage::Database> db;
    engine::SystemClock local_clock{clock_skew_ms()};
    std::unique_ptr<engine::DatabaseClock> clock;
    Plugins plugins;
    std::unique_ptr<engine::Engine> engine;
    std::unique_ptr<sdk::Apps> apps;  // ended before the engine, whose workflows it replaces
};

std::unique_ptr<Runtime> open_runtime(const std::string& db_url, bool with_examples,
                                      bool dev = false) {
    auto rt = std::make_unique<Runtime>();
    rt->db = open_database(db_url);
    rt->plugins = make_plugins(with_examples);
    migrate_apply(*rt->db, rt->plugins);
    rt->clock = std::make_unique<engine::DatabaseClock>(*rt->db, rt->local_clock);
    rt->engine = std::make_unique<engine::Engine>(*rt->db, *rt->clock);
    crash_after_steps(*rt->engine);
    for (auto& p : rt->plugins) {
        try {
            p->start({*rt->db, *rt->engine});
        } catch (const std::invalid_argument& e) {
            throw Exit{kExitUsage, fmt::format("{} plugin: {}", p->name(), e.what())};
        }
    }
    try {  // a workflow's bad definition (a malformed cron expression) is configuration
        if (with_examples) examples::register_examples(*rt->engine);
        for (auto& p : rt->plugins) p->register_workflows(*rt->engine);
    } catch (const std::invalid_argument& e) {
        throw Exit{kExitUsage, e.what()};
    }
    sdk::AppsOptions apps;
    apps.dev = dev;
    if (!dev) apps.key = signing_key();
    rt->apps = std::make_unique<sdk::Apps>(*rt->db, *rt->engine, std::move(apps));
    rt->apps->refresh();  // the SDK functions, registered before anything starts
    return rt;
}

engine::WorkerOptions worker_options(const WorkerFlags& flags) {
    engine::WorkerOptions o;
    o.threads = flags.workers;
    o.lease = std::chrono::milliseconds(flags.lease_ms);
    o.retention = std::chrono::milliseconds(
        flags.retention == "0" ? 0 : parse_duration_ms(flags.retention).value_or(0));
    return o;
}

// Raises the soft open-file limit to the hard one: each connection is a descriptor, and
// the default soft limit (often 1,024) is below the connection limit.
void raise_open_file_limit(std::size_t max_connections) {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    constexpr rlim_t kReserve = 128;  // the database, logs, outbound HTTP and SMTP
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < max_connections + kReserve)
        spdlog::warn(
            "the open-file limit ({}) is below --max-connections + {}; when descriptors run "
            "out, accepting pauses until connections end",
            limit.rlim_cur, kReserve);
}

int cmd_serve(const std::string& db_url, const server::ServerOptions& options,
              const std::string& metrics_key, const WorkerFlags& flags) {
    // Check the URL and bind the port before touching the database, so a typo or a busy
    // port creates nothing.
    try {
        storage::parse_database_url(db_url);
    } catch (const storage::ConfigError& e) {
        throw Exit{kExitUsage, e.what()};
    }
    // The router needs the database, which is opened only after the port is bound; the
    // server accepts nothing before run(), when the router exists.
    raise_open_file_limit(options.max_connections);
    std::unique_ptr<server::Router> router;
    std::unique_ptr<server::HttpServer> http;
    try {
        http = std::make_unique<server::HttpServer>(
            options, [&router](const server::Request& req) { return router->dispatch(req); });
    } catch (const server::ListenError& e) {
        throw Exit{kExitUsage, e.what()};
    }
    auto rt = open_runtime(db_url, flags.examples, flags.dev);
    auto& db = rt->db;
    auto& engine = *rt->engine;
    server::ApiKeys keys(*db);
    server::Metrics metrics(metrics_key);
    router = server::make_router(*db, engine, keys, metrics);
    server::add_sdk_routes(*router, *db, *rt->apps, engine, keys);
    for (auto& p : rt->plugins) p->add_routes(*router);
    rt->apps->start();
    if (flags.workers > 0) engine.start(worker_options(flags));
    spdlog::info("cairn {} serving http://{} on {} ({})", kVersion, http->local_address(),
                 storage::to_string(db->backend()), db->url());
    http->run();
    http.reset();   // connections' state may refer to the plugins' services, ended below
    engine.stop();  // running executions yield at their next step and hand their runs back
    spdlog::info("stopped");
    return kExitOk;
}

int cmd_worker(const std::string& db_url, const WorkerFlags& flags) {
    auto rt = open_runtime(db_url, flags.examples, flags.dev);
    rt->apps->start();
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

// What the command line asked for, filled in by CLI11 as it parses; the chosen
// subcommand's callback sets `action`, which run() calls once parsing succeeded.
struct Args {
    std::string db_url = kDefaultDb;
    bool as_json = false;
    bool examples = false;
    int limit = 50;
    std::function<int()> action;
};

void add_db(CLI::App* cmd, Args& a) {
    cmd->add_option("--db", a.db_url,
                    "Database URL: sqlite://PATH, sqlite::memory: or postgres://...")
        ->envname("CAIRN_DB")
        ->capture_default_str();
}

// --db and --json, and with `with_engine` --examples: the flags of the operating verbs.
void add_common(CLI::App* cmd, Args& a, bool with_engine) {
    add_db(cmd, a);
    cmd->add_flag("--json", a.as_json, "Print JSON instead of a table");
    if (with_engine) {
        cmd->add_flag("--examples", a.examples, "Include the example workflows in the registry")
            ->envname("CAIRN_EXAMPLES");
    }
}

void add_limit(CLI::App* cmd, Args& a, const std::string& what) {
    cmd->add_option("--limit", a.limit, what)->check(CLI::Range(1, 1000))->capture_default_str();
}

// The subcommand's action, run with the database, engine and plugins open.
template <class Fn>
void with_runtime(CLI::App* cmd, Args& a, Fn fn) {
    cmd->callback([&a, fn] {
        a.action = [&a, fn] {
            auto rt = open_runtime(a.db_url, a.examples);
            return fn(*rt);
        };
    });
}

std::optional<std::string> opt(const std::string& v) {
    return v.empty() ? std::nullopt : std::optional<std::string>(v);
}

// serve, worker and migrate.
void add_process_commands(CLI::App& app, Args& a) {
    struct Serve {
        server::ServerOptions options;
        int read_timeout_ms = 30'000;
        std::string trusted_proxies;
        std::string cors_origins;
        std::string metrics_key;
        WorkerFlags flags;
    };
    auto sv = std::make_shared<Serve>();
    auto* serve =
        app.add_subcommand("serve", "Run the HTTP server on the database (migrating it first)");
    add_db(serve, a);
    sv->options.listen = kDefaultListen;
    serve
        ->add_option("--listen", sv->options.listen,
                     "HOST:PORT to listen on (port 0 picks a free one)")
        ->envname("CAIRN_LISTEN")
        ->capture_default_str();
    serve->add_option("--threads", sv->options.work_threads, "Threads for request handlers")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    serve
        ->add_option("--read-timeout-ms", sv->read_timeout_ms,
                     "Time allowed to receive a whole request, and to idle between requests")
        ->check(CLI::Range(100, 3'600'000))
        ->capture_default_str();
    serve
        ->add_option("--max-connections", sv->options.max_connections,
                     "Open connections at most; past it a new one gets 503")
        ->envname("CAIRN_MAX_CONNECTIONS")
        ->check(CLI::Range(1, 1'000'000))
        ->capture_default_str();
    serve
        ->add_option("--max-connections-per-client", sv->options.max_connections_per_client,
                     "Open connections from one client address at most (trusted proxies exempt)")
        ->envname("CAIRN_MAX_CONNECTIONS_PER_CLIENT")
        ->check(CLI::Range(1, 1'000'000))
        ->capture_default_str();
    sv->options.requests_per_minute = 6000;
    serve
        ->add_option("--rate-limit", sv->options.requests_per_minute,
                     "Requests per minute from one client address (0: no limit)")
        ->envname("CAIRN_RATE_LIMIT")
        ->check(CLI::Range(0, 100'000'000))
        ->capture_default_str();
    serve
        ->add_option("--cors-origins", sv->cors_origins,
                     "Origins whose pages may call the API, comma-separated "
                     "(https://app.example.com), or * for any without credentials")
        ->envname("CAIRN_CORS_ORIGINS");
    serve
        ->add_option("--hsts-max-age", sv->options.policy.hsts_max_age_s,
                     "Send Strict-Transport-Security with this max-age in seconds (behind TLS)")
        ->envname("CAIRN_HSTS_MAX_AGE")
        ->check(CLI::Range(0, 63'072'000))
        ->capture_default_str();
    serve
        ->add_option("--metrics-key", sv->metrics_key,
                     "Require Authorization: Bearer KEY on /metrics (default: open)")
        ->envname("CAIRN_METRICS_KEY");
    serve
        ->add_option("--trusted-proxies", sv->trusted_proxies,
                     "Proxies whose X-Forwarded-For is believed: addresses or networks, "
                     "comma-separated (e.g. 10.0.0.0/8,::1)")
        ->envname("CAIRN_TRUSTED_PROXIES");
    add_worker_flags(serve, sv->flags, 0);
    serve->callback([&a, sv] {
        sv->options.read_timeout = std::chrono::milliseconds(sv->read_timeout_ms);
        try {
            sv->options.trusted_proxies = server::TrustedProxies::parse(sv->trusted_proxies);
        } catch (const std::invalid_argument& e) {
            throw CLI::ValidationError("--trusted-proxies", e.what());
        }
        try {
            sv->options.policy.cors_origins =
                server::ResponsePolicy::parse_origins(sv->cors_origins);
        } catch (const std::invalid_argument& e) {
            throw CLI::ValidationError("--cors-origins", e.what());
        }
        a.action = [&a, sv] {
            return cmd_serve(a.db_url, sv->options, sv->metrics_key, sv->flags);
        };
    });

    auto flags = std::make_shared<WorkerFlags>();
    auto* worker =
        app.add_subcommand("worker", "Run workers only (no HTTP): claim and execute runs");
    add_db(worker, a);
    add_worker_flags(worker, *flags, 1);
    worker->callback(
        [&a, flags] { a.action = [&a, flags] { return cmd_worker(a.db_url, *flags); }; });

    auto status_only = std::make_shared<bool>(false);
    auto* migrate = app.add_subcommand("migrate", "Apply pending schema migrations and list them");
    add_db(migrate, a);
    migrate->add_flag("--status", *status_only,
                      "Only list applied and pending migrations; change nothing");
    migrate->add_flag("--json", a.as_json, "Print JSON instead of a table");
    migrate->add_flag("--examples", a.examples, "Include the example plugin's migrations")
        ->envname("CAIRN_EXAMPLES");
    migrate->callback([&a, status_only] {
        a.action = [&a, status_only] {
            return cmd_migrate(a.db_url, *status_only, a.as_json, a.examples);
        };
    });
}

// keys create|list|revoke.
void add_key_commands(CLI::App& app, Args& a) {
    struct Key {
        std::string name, scope = "admin", id, events;
    };
    auto k = std::make_shared<Key>();
    auto* keys = app.add_subcommand("keys", "Manage API keys for the engine's HTTP API")
                     ->require_subcommand(1);
    auto* create = keys->add_subcommand("create", "Create a key; prints the secret once");
    add_common(create, a, false);
    create->add_option("--name", k->name, "What the key is for")->required();
    create->add_option("--scope", k->scope, "admin (every route) or events (sending events only)")
        ->capture_default_str();
    create->add_option("--events", k->events,
                       "Event names the key may send, comma-separated; a trailing * matches a "
                       "prefix (ticket/*). Default: any");
    with_runtime(create, a, [&a, k](Runtime& rt) {
        return keys_create(*rt.db, k->name, k->scope, k->events, a.as_json);
    });
    auto* list = keys->add_subcommand("list", "List keys (never their secrets)");
    add_common(list, a, false);
    with_runtime(list, a, [&a](Runtime& rt) { return keys_list(*rt.db, a.as_json); });
    auto* revoke = keys->add_subcommand("revoke", "Revoke a key at once");
    add_common(revoke, a, false);
    revoke->add_option("id", k->id, "Key id (see keys list)")->required();
    with_runtime(revoke, a, [k](Runtime& rt) { return keys_revoke(*rt.db, k->id); });
}

// The filters of runs list and runs retry, with --since resolved against the clock.
struct RunArgs {
    storage::RunFilter filter;
    std::string since, cursor, id, from_step, data;
    bool yes = false;
    storage::RunFilter resolved(const engine::Clock& clock) const {
        storage::RunFilter f = filter;
        if (since.empty()) return f;
        const auto ms = parse_duration_ms(since);
        if (!ms)
            throw Exit{kExitUsage,
                       fmt::format("--since {}: expected a number and s, m, h or d", since)};
        f.created_from = clock.now_ms() - *ms;
        return f;
    }
};

void add_run_filters(CLI::App* cmd, RunArgs& r) {
    cmd->add_option("--workflow", r.filter.workflow_id, "Only runs of this workflow");
    cmd->add_option("--status", r.filter.status,
                    "queued, running, sleeping, waiting, completed, failed, cancelled")
        ->check(CLI::IsMember(
            {"queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled"}));
    cmd->add_option("--event", r.filter.event_name, "Only runs started by events of this name");
    cmd->add_option("--since", r.since,
                    "Only runs created within this long, e.g. 90s, 15m, 1h, 2d");
}

// runs list|show|cancel|retry|replay.
void add_run_commands(CLI::App& app, Args& a) {
    auto r = std::make_shared<RunArgs>();
    auto* runs =
        app.add_subcommand("runs", "Inspect and operate workflow runs")->require_subcommand(1);
    auto* list = runs->add_subcommand("list", "List runs, newest first");
    add_common(list, a, true);
    add_run_filters(list, *r);
    list->add_option("--search", r->filter.search, "A run id or event id, or a prefix of one");
    list->add_option("--cursor", r->cursor,
                     "Continue after this run id (printed when there are more)");
    add_limit(list, a, "Runs per page");
    with_runtime(list, a, [&a, r](Runtime& rt) {
        return runs_list(*rt.engine, r->resolved(*rt.clock), opt(r->cursor), a.limit, a.as_json);
    });
    auto* show =
        runs->add_subcommand("show", "Show a run, its event and the timeline of its steps");
    add_common(show, a, true);
    show->add_option("id", r->id, "Run id")->required();
    with_runtime(show, a, [&a, r](Runtime& rt) { return runs_show(*rt.engine, r->id, a.as_json); });
    // cancel, retry and replay take a run id, or filters for every matching run.
    using Op = engine::Engine::BulkOperation;
    auto bulk = [&a, r](Runtime& rt, Op op, const char* verb) {
        storage::RunFilter f = r->resolved(*rt.clock);
        if (!f.workflow_id && !f.status && !f.event_name && !f.created_from)
            throw Exit{kExitUsage,
                       fmt::format("runs {} needs a run id, or filters (--status, --workflow, "
                                   "--event, --since)",
                                   verb)};
        return runs_bulk(*rt.engine, op, f, r->yes, a.as_json);
    };
    auto* cancel = runs->add_subcommand(
        "cancel",
        "Cancel a run (it stops at its next step boundary); or, with filters, every matching run");
    add_common(cancel, a, true);
    cancel->add_option("id", r->id, "Run id (omit to cancel by filters)");
    add_run_filters(cancel, *r);
    cancel->add_flag("--yes,-y", r->yes, "Do not ask before a bulk cancel");
    with_runtime(cancel, a, [&a, r, bulk](Runtime& rt) {
        if (!r->id.empty()) return runs_cancel(*rt.engine, r->id, a.as_json);
        return bulk(rt, Op::cancel, "cancel");
    });
    auto* retry = runs->add_subcommand("retry",
                                       "Re-queue a failed run keeping its completed steps; or, "
                                       "with filters, every matching failed run");
    add_common(retry, a, true);
    retry->add_option("id", r->id, "Run id (omit to retry by filters)");
    add_run_filters(retry, *r);
    retry->add_flag("--yes,-y", r->yes, "Do not ask before a bulk retry");
    with_runtime(retry, a, [&a, r, bulk](Runtime& rt) {
        if (!r->id.empty()) return runs_retry(*rt.engine, r->id, a.as_json);
        // Without --status, the failed runs (cancelled ones only when asked for).
        if (!r->filter.status &&
            (r->filter.workflow_id || r->filter.event_name || !r->since.empty()))
            r->filter.status = "failed";
        return bulk(rt, Op::retry, "retry");
    });
    auto* replay = runs->add_subcommand(
        "replay", "Start a new run on the same event; or, with filters, of every matching run");
    add_common(replay, a, true);
    replay->add_option("id", r->id, "Run id (omit to replay by filters)");
    replay->add_option("--from-step", r->from_step,
                       "Copy the steps before this one; run it and the rest again");
    replay->add_option("--data", r->data, "Replay on an event of the same name with this data");
    add_run_filters(replay, *r);
    replay->add_flag("--yes,-y", r->yes, "Do not ask before a bulk replay");
    with_runtime(replay, a, [&a, r, bulk](Runtime& rt) {
        if (!r->id.empty())
            return runs_replay(*rt.engine, r->id, opt(r->from_step), opt(r->data), a.as_json);
        if (!r->from_step.empty() || !r->data.empty())
            throw Exit{kExitUsage, "--from-step and --data need a run id"};
        return bulk(rt, Op::replay, "replay");
    });
}

// gc: retention on demand.
void add_gc_command(CLI::App& app, Args& a) {
    struct Gc {
        std::string older_than = "30d";
        std::vector<std::string> statuses;
        bool dry_run = false;
    };
    auto g = std::make_shared<Gc>();
    auto* gc = app.add_subcommand(
        "gc", "Delete runs that ended long ago, with their steps and the events no run needs");
    add_common(gc, a, true);
    gc->add_option("--older-than", g->older_than, "How long ago the runs ended, e.g. 30d, 12h")
        ->capture_default_str();
    gc->add_option("--status", g->statuses,
                   "completed, failed or cancelled; repeat for several (default: all three)")
        ->check(CLI::IsMember({"completed", "failed", "cancelled"}));
    gc->add_flag("--dry-run", g->dry_run, "Only count the runs that would be deleted");
    with_runtime(gc, a, [&a, g](Runtime& rt) {
        const auto ms = parse_duration_ms(g->older_than);
        if (!ms)
            throw Exit{
                kExitUsage,
                fmt::format("--older-than {}: expected a number and s, m, h or d", g->older_than)};
        std::vector<std::string> statuses = g->statuses;
        if (statuses.empty()) statuses = {"completed", "failed", "cancelled"};
        return gc_runs(*rt.engine, rt.clock->now_ms() - *ms, statuses, g->dry_run, a.as_json);
    });
}

// events send|list, workflows list.
void add_event_commands(CLI::App& app, Args& a) {
    struct Event {
        std::string name, data = "{}", key;
    };
    auto e = std::make_shared<Event>();
    auto* events = app.add_subcommand("events", "Send and list events")->require_subcommand(1);
    auto* send = events->add_subcommand("send", "Send an event (starts the workflows it triggers)");
    add_common(send, a, true);
    send->add_option("name", e->name, "Event name, e.g. example/hello")->required();
    send->add_option("--data", e->data, "Event data as JSON")->capture_default_str();
    send->add_option("--idempotency-key", e->key, "A second event with this key starts nothing");
    with_runtime(send, a, [&a, e](Runtime& rt) {
        return events_send(*rt.engine, e->name, e->data, opt(e->key), a.as_json);
    });
    auto* list = events->add_subcommand("list", "List recent events and the runs they started");
    add_common(list, a, true);
    list->add_option("--name", e->name, "Only events of this name");
    add_limit(list, a, "How many");
    with_runtime(list, a, [&a, e](Runtime& rt) {
        return events_list(*rt.engine, opt(e->name), a.limit, a.as_json);
    });

    auto* workflows =
        app.add_subcommand("workflows", "List, pause and resume workflows")->require_subcommand(1);
    auto* wf_list =
        workflows->add_subcommand("list", "Registered workflows with run counts by status");
    add_common(wf_list, a, true);
    with_runtime(wf_list, a, [&a](Runtime& rt) { return workflows_list(*rt.engine, a.as_json); });
    for (const bool pause : {true, false}) {
        auto* cmd = workflows->add_subcommand(
            pause ? "pause" : "resume",
            pause ? "Pause a workflow: its runs queue up and none starts until resumed"
                  : "Resume a paused workflow: its queued runs start in order");
        add_common(cmd, a, true);
        cmd->add_option("id", e->name, "Workflow id")->required();
        with_runtime(cmd, a, [&a, e, pause](Runtime& rt) {
            return workflows_pause(*rt.engine, e->name, pause, a.as_json);
        });
    }
}

// The ticket plugin's users create and mail list (docs/tickets.md).
void add_ticket_commands(CLI::App& app, Args& a) {
    auto u = std::make_shared<NewUser>();
    auto* users = app.add_subcommand("users", "Manage ticket-system users")->require_subcommand(1);
    auto* create =
        users->add_subcommand("create", "Create a user, e.g. the first admin: --role admin");
    add_common(create, a, false);
    create->add_option("--email", u->email, "Email address (the login)")->required();
    create->add_option("--name", u->name, "Display name (default: from the email)");
    create->add_option("--role", u->role, "user, moderator or admin")
        ->check(CLI::IsMember({"user", "moderator", "admin"}))
        ->capture_default_str();
    create->add_option("--skills", u->skills, "Comma-separated skills, e.g. react,postgresql");
    create->add_option("--password", u->password,
                       "Password (8-128 characters; generated and printed when omitted)");
    create->add_flag("--password-stdin", u->password_stdin,
                     "Read the password from the first line of standard input");
    with_runtime(create, a,
                 [&a, u](Runtime& rt) { return users_create(*rt.db, *rt.engine, *u, a.as_json); });

    auto to = std::make_shared<std::string>();
    auto* mail = app.add_subcommand("mail", "Mail the system has sent")->require_subcommand(1);
    auto* list = mail->add_subcommand("list", "Recorded mails, newest first");
    add_common(list, a, false);
    list->add_option("--to", *to, "Only mails to this address");
    add_limit(list, a, "How many");
    with_runtime(list, a,
                 [&a, to](Runtime& rt) { return mail_list(*rt.db, opt(*to), a.limit, a.as_json); });
}

// apps sync|list|remove: Inngest SDK apps (docs/sdk.md).
void add_app_commands(CLI::App& app, Args& a) {
    auto arg = std::make_shared<std::string>();
    auto* apps =
        app.add_subcommand("apps", "Sync, list and remove Inngest SDK apps")->require_subcommand(1);
    auto* sync = apps->add_subcommand(
        "sync", "Ask an app for its functions and store them (CAIRN_SIGNING_KEY signs the ask)");
    add_common(sync, a, false);
    sync->add_option("url", *arg, "The app's serve URL, e.g. http://localhost:3000/api/inngest")
        ->required();
    with_runtime(sync, a, [&a, arg](Runtime& rt) { return apps_sync(*rt.apps, *arg, a.as_json); });
    auto* list = apps->add_subcommand("list", "Synced apps with their functions and warnings");
    add_common(list, a, false);
    with_runtime(list, a, [&a](Runtime& rt) { return apps_list(*rt.apps, a.as_json); });
    auto* remove = apps->add_subcommand(
        "remove", "Remove an app: its functions start no runs, its runs not yet ended fail");
    add_common(remove, a, false);
    remove->add_option("id", *arg, "App id (see apps list)")->required();
    with_runtime(remove, a,
                 [&a, arg](Runtime& rt) { return apps_remove(*rt.apps, *arg, a.as_json); });
}

}  // namespace

int run(int argc, char** argv) {
    CLI::App app{"Cairn: a durable workflow engine with a support-ticket plugin", "cairn"};
    app.set_version_flag("--version", std::string(kVersion));
    app.require_subcommand(1);
    Args a;
    add_process_commands(app, a);
    add_key_commands(app, a);
    add_run_commands(app, a);
    add_event_commands(app, a);
    add_gc_command(app, a);
    add_ticket_commands(app, a);
    add_app_commands(app, a);
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
    if (!a.action) return kExitUsage;
    setup_logging();
    try {
        return a.action();
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
}

}  // namespace cairn::cli
