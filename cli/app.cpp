#include "cli/app.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/time.hpp"
#include "common/version.hpp"
#include "engine/engine.hpp"
#include "examples/hello_workflow.hpp"
#include "server/http_server.hpp"
#include "server/router.hpp"
#include "storage/database.hpp"
#include "storage/migrations.hpp"
#include "storage/run_store.hpp"

namespace cairn::cli {
namespace {

constexpr const char* kDefaultDb = "sqlite://cairn.db";
constexpr const char* kDefaultListen = "127.0.0.1:8080";

// Every component's migrations, in dependency order. Plugins add theirs here.
std::vector<storage::Component> all_components() {
    return {storage::run_store_component()};
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

// Every workflow this binary runs. Plugins add theirs here.
void register_workflows(engine::Engine& engine, const WorkerFlags& flags) {
    if (flags.examples) examples::register_examples(engine);
}

engine::WorkerOptions worker_options(const WorkerFlags& flags) {
    engine::WorkerOptions o;
    o.threads = flags.workers;
    o.lease = std::chrono::milliseconds(flags.lease_ms);
    return o;
}

int migrate_apply(storage::Database& db) {
    storage::Migrator migrator(db, all_components());
    const int n = migrator.apply();
    spdlog::info("migrations: {} applied", n);
    return n;
}

int cmd_serve(const std::string& db_url, const std::string& listen, std::size_t threads,
              const WorkerFlags& flags) {
    // Check the URL and bind the port before touching the database, so a typo or a busy
    // port creates nothing.
    try {
        storage::parse_database_url(db_url);
    } catch (const storage::ConfigError& e) {
        throw Exit{kExitUsage, e.what()};
    }
    std::unique_ptr<storage::Database> db;
    server::ServerOptions options;
    options.listen = listen;
    options.work_threads = threads;
    std::unique_ptr<server::HttpServer> http;
    try {
        http = std::make_unique<server::HttpServer>(
            options, [&db](const server::Request& req) { return server::make_router(*db)(req); });
    } catch (const server::ListenError& e) {
        throw Exit{kExitUsage, e.what()};
    }
    db = open_database(db_url);
    migrate_apply(*db);
    engine::SystemClock clock;
    engine::Engine engine(*db, clock);
    register_workflows(engine, flags);
    if (flags.workers > 0) engine.start(worker_options(flags));
    spdlog::info("cairn {} serving http://{} on {} ({})", kVersion, http->local_address(),
                 storage::to_string(db->backend()), db->url());
    http->run();
    engine.stop();  // running executions yield at their next step and hand their runs back
    spdlog::info("stopped");
    return kExitOk;
}

int cmd_worker(const std::string& db_url, const WorkerFlags& flags) {
    auto db = open_database(db_url);
    migrate_apply(*db);
    engine::SystemClock clock;
    engine::Engine engine(*db, clock);
    register_workflows(engine, flags);
    if (engine.workflows().empty()) {
        spdlog::warn(
            "no workflows are registered in this binary; runs it claims will fail (try "
            "--examples)");
    }
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

int cmd_migrate(const std::string& db_url, bool status_only, bool as_json) {
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
    storage::Migrator migrator(*db, all_components());
    if (!status_only) migrate_apply(*db);
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
    try {
        if (serve->parsed()) return cmd_serve(db_url, listen, threads, serve_flags);
        if (worker->parsed()) return cmd_worker(db_url, worker_flags);
        if (migrate->parsed()) return cmd_migrate(db_url, status_only, as_json);
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
