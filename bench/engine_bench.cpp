// cairn_bench: the engine workloads of bench/run (bench/README.md).
//
//   cairn_bench throughput --db URL --runs N --concurrency C [--send-while-running]
//       N events of a 5-step no-op workflow are written first (500 per transaction), then
//       C worker threads drain them; reports runs/s and durable steps/s. With
//       --send-while-running the events are sent during the timed window instead, one
//       Engine::send each from 8 threads, at most C runs in flight (as a peer's driver
//       starts each workflow and awaits it).
//       --keys K: the workflow runs at most one at a time per key, over K keys (flow
//       control); adds key_gap_p50_ms, the median wait from a run's end to the next
//       start on its key.
//   cairn_bench enqueue --db URL --runs N [--event NAME] [--data JSON]
//       writes N events (500 per transaction) for `cairn worker --examples` to run; the
//       recovery and scaling benchmarks use it with example/hello.
//   cairn_bench latency --db URL --runs N [--served]
//       one run at a time on the calling thread: send the event, claim and execute it to
//       completion; reports p50/p90/p99 milliseconds from event accepted to run completed.
//       With --served the engine's worker threads run it, started as `cairn serve` starts
//       them, and the driver waits for the run's end to commit (Engine::await_runs_ended).
//   cairn_bench sdk --db URL --app URL [--app-pid PID] --runs N --concurrency C
//       the same 5-step workflow as an Inngest SDK function (the app at URL, synced here;
//       CAIRN_SIGNING_KEY for signed mode) and as native C++, in one process, interleaved:
//       runs/s with C workers draining N runs each, then p50/p99 one at a time; the app's
//       CPU per run (from /proc/PID) apart from this process's.
//
// Prints one JSON line on stdout and a human summary on stderr.

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <mutex>
#include <semaphore>
#include <sstream>
#include <thread>

#include "engine/engine.hpp"
#include "examples/hello_workflow.hpp"
#include "sdk/apps.hpp"
#include "sdk/signing.hpp"
#include "storage/database.hpp"
#include "storage/migrations.hpp"
#include "storage/run_store.hpp"
#include "storage/sqlite/wal_vfs.hpp"

using namespace cairn;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kSteps = 5;

// Bodies that ran their last step: the throughput driver watches this instead of counting
// completed runs in the database every few milliseconds, which loaded the database under
// measurement (on Postgres that count took about a tenth of the server's time).
std::atomic<std::int64_t> bodies_done{0};
// With --send-while-running: a slot per run in flight, given back when its body ends.
std::counting_semaphore<>* in_flight = nullptr;

// With `keys` > 0, at most one run per key (data.k) executes at once (flow control).
void register_bench(engine::Engine& e, int keys = 0) {
    auto w = workflow("bench").on_event("bench/go");
    if (keys > 0) w.concurrency(1, "event.data.k");
    e.add(w.run([](Context& ctx) {
        json last = 0;
        for (int i = 0; i < kSteps; ++i)
            last = ctx.step(fmt::format("step-{}", i), [i] { return i; });
        ++bodies_done;
        if (in_flight != nullptr) in_flight->release();
        return last;
    }));
}

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::int64_t completed(storage::Database& db) {
    return db.read("SELECT COUNT(*) FROM runs WHERE status = 'completed'")
        .front()
        .get<std::int64_t>(0);
}

// Busy and stolen CPU time of the whole machine so far (Linux /proc/stat, all CPUs), in
// milliseconds: the database server's work counts too. CPU per run varies less than
// runs/s on a shared virtual machine, so A/B comparisons quote both. Zero elsewhere.
struct MachineCpu {
    double busy_ms = 0, steal_ms = 0;
};
MachineCpu machine_cpu() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) ||
        cpu != "cpu")
        return {};
    const double ms_per_tick = 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
    return {(user + nice + system + irq + softirq) * ms_per_tick, steal * ms_per_tick};
}

bool group_commit = true;

// The median wait between one run's end and the next run's start on the same key, over
// keys that ran more than one run (ms): how promptly a freed slot passes on.
double gap_p50_ms(storage::Database& db) {
    std::vector<std::int64_t> gaps;
    std::string last_key;
    std::int64_t last_end = 0;
    std::vector<std::tuple<std::string, std::int64_t, std::int64_t>> spans;
    for (auto row : db.read("SELECT e.data, r.started_at, r.ended_at FROM runs r JOIN events e "
                            "ON e.id = r.event_id WHERE r.status = 'completed'"))
        spans.emplace_back(json::parse(row.get<std::string>(0)).value("k", json(0)).dump(),
                           row.get<std::int64_t>(1), row.get<std::int64_t>(2));
    std::sort(spans.begin(), spans.end());
    for (const auto& [k, start, end] : spans) {
        if (k == last_key) gaps.push_back(start - last_end);
        last_key = k;
        last_end = end;
    }
    if (gaps.empty()) return 0;
    std::sort(gaps.begin(), gaps.end());
    return static_cast<double>(gaps[gaps.size() / 2]);
}

int throughput(storage::Database& db, int runs, int concurrency, bool send_while_running,
               int keys) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    if (!group_commit) db.writes().set_max_batch(1);
    register_bench(e, keys);
    const auto fill0 = Clock::now();
    for (int sent = 0; !send_while_running && sent < runs;) {
        const int batch = std::min(500, runs - sent);
        std::vector<engine::EventInput> events;
        for (int i = 0; i < batch; ++i)
            events.push_back({.name = "bench/go",
                              .data = {{"i", sent + i}, {"k", keys > 0 ? (sent + i) % keys : 0}}});
        db.transact([&](storage::Transaction& tx) { e.send(tx, events); });
        sent += batch;
    }
    const double fill_ms = ms_since(fill0);
    const auto t0 = Clock::now();
    const MachineCpu cpu0 = machine_cpu();
    const auto wal0 = storage::sqlite::wal_vfs_counts();
    engine::WorkerOptions o;
    o.threads = concurrency;
    o.poll = std::chrono::milliseconds(50);
    e.start(o);
    std::counting_semaphore<> slots(concurrency);
    std::vector<std::thread> senders;
    if (send_while_running) {
        in_flight = &slots;
        std::atomic<int> next{0};
        std::mutex failed_mu;
        std::exception_ptr failed;
        for (int t = 0; t < 8; ++t) {
            senders.emplace_back([&] {
                try {
                    for (int i; (i = next++) < runs;) {
                        slots.acquire();
                        e.send({.name = "bench/go", .data = {{"i", i}}});
                    }
                } catch (...) {
                    std::lock_guard lock(failed_mu);
                    failed = std::current_exception();
                    next = runs;  // the other senders stop too
                }
            });
        }
        for (auto& t : senders) t.join();  // every event sent; at most C runs still going
        if (failed) {
            e.stop();
            in_flight = nullptr;
            std::rethrow_exception(failed);
        }
    }
    // Every body has run (its run's end is being committed), then the database says when
    // every run is completed.
    while (bodies_done.load() < runs) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    while (completed(db) < runs) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const double seconds = ms_since(t0) / 1000.0;
    const MachineCpu cpu1 = machine_cpu();
    const auto writes = db.writes().stats();
    const auto wal1 = storage::sqlite::wal_vfs_counts();
    e.stop();
    in_flight = nullptr;
    const double rps = runs / seconds;
    const double gap = keys > 0 ? gap_p50_ms(db) : 0.0;
    std::cout << json{{"workload", "throughput"},
                      {"backend", storage::to_string(db.backend())},
                      {"runs", runs},
                      {"steps_per_run", kSteps},
                      {"concurrency", concurrency},
                      {"seconds", seconds},
                      {"runs_per_s", rps},
                      {"steps_per_s", rps * kSteps},
                      {"enqueue_ms", send_while_running ? 0.0 : fill_ms},
                      {"send_while_running", send_while_running},
                      {"machine_cpu_us_per_run", (cpu1.busy_ms - cpu0.busy_ms) * 1000.0 / runs},
                      {"machine_steal_ms", cpu1.steal_ms - cpu0.steal_ms},
                      {"group_commit", group_commit},
                      {"batches", writes.batches},
                      {"batched_writes", writes.writes},
                      {"shared_batches", writes.shared_batches},
                      {"shared_writes", writes.shared_writes},
                      {"writer_cpu_us_per_run",
                       static_cast<double>(writes.writer_cpu_ns) / 1000.0 / runs},
                      {"wal_frames", wal1.frames - wal0.frames},
                      {"wal_writes", wal1.writes - wal0.writes},
                      {"keys", keys},
                      {"key_gap_p50_ms", gap}}
                     .dump()
              << std::endl;
    std::cerr << fmt::format(
        "throughput: {} runs x {} steps, {} workers on {}: {:.2f} s, {:.0f} runs/s, {:.0f} "
        "steps/s\n",
        runs, kSteps, concurrency, storage::to_string(db.backend()), seconds, rps, rps * kSteps);
    return 0;
}

int enqueue(storage::Database& db, int runs, const std::string& event, const std::string& data) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    register_bench(e);
    examples::register_examples(e);
    const json payload = json::parse(data);
    const auto t0 = Clock::now();
    for (int sent = 0; sent < runs;) {
        const int batch = std::min(500, runs - sent);
        std::vector<engine::EventInput> events(static_cast<std::size_t>(batch),
                                               {.name = event, .data = payload});
        db.transact([&](storage::Transaction& tx) { e.send(tx, events); });
        sent += batch;
    }
    std::cout << json{{"workload", "enqueue"}, {"runs", runs}, {"ms", ms_since(t0)}}.dump()
              << std::endl;
    return 0;
}

int latency(storage::Database& db, int runs, bool served) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    if (!group_commit) db.writes().set_max_batch(1);
    register_bench(e);
    if (served) {
        engine::WorkerOptions o;  // as `cairn serve` starts them
        e.start(o);
    }
    std::vector<double> ms;
    ms.reserve(static_cast<std::size_t>(runs));
    std::int64_t ended = 0;
    for (int i = 0; i < runs + 20; ++i) {
        const auto t0 = Clock::now();
        e.send({.name = "bench/go", .data = {{"i", i}}});
        if (served) {
            // A worker thread executes it; the engine counts the run once its end committed.
            const auto now_ended = e.await_runs_ended(ended, std::chrono::seconds(30));
            if (now_ended != ended + 1) throw std::runtime_error("the run did not end in 30 s");
            ended = now_ended;
        } else if (e.run_until_idle(1) != 1) {
            // At most one execution: without the limit, a second claim would look for more
            // work after the run completed, inside the measured time.
            throw std::runtime_error("expected exactly one execution");
        }
        if (i >= 20) ms.push_back(ms_since(t0));  // the first 20 warm caches and pools
    }
    e.stop();
    std::sort(ms.begin(), ms.end());
    auto pct = [&](double p) {
        return ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * ms.size()))];
    };
    std::cout << json{{"workload", "latency"}, {"backend", storage::to_string(db.backend())},
                      {"runs", runs},          {"steps_per_run", kSteps},
                      {"p50_ms", pct(0.50)},   {"p90_ms", pct(0.90)},
                      {"p99_ms", pct(0.99)},   {"max_ms", ms.back()},
                      {"served", served}}
                     .dump()
              << std::endl;
    std::cerr << fmt::format(
        "latency: {} runs x {} steps on {}, one at a time{}: p50 {:.2f} ms, p90 {:.2f} ms, p99 "
        "{:.2f} ms\n",
        runs, kSteps, storage::to_string(db.backend()), served ? " by worker threads" : "",
        pct(0.5), pct(0.9), pct(0.99));
    return 0;
}

// CPU time (user + system) in ms: of a process by pid (/proc), or of this one.
double process_cpu_ms(int pid) {
    if (pid <= 0) {
        rusage u{};
        getrusage(RUSAGE_SELF, &u);
        return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000.0 +
               (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1000.0;
    }
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) utime = std::stod(field);
        if (i == 15) stime = std::stod(field);
    }
    return (utime + stime) * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The SDK's cost beside native C++: the same five steps, drained by the same workers, then
// one run at a time, on one engine, the two kinds interleaved.
int sdk_bench(storage::Database& db, const std::string& app_url, int app_pid, int runs,
              int concurrency, int latency_runs) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    register_bench(e);
    sdk::AppsOptions options;
    if (const char* key = std::getenv("CAIRN_SIGNING_KEY"))  // NOLINT(concurrency-mt-unsafe)
        options.key = sdk::SigningKey::parse(key);
    options.dev = !options.key;
    sdk::Apps apps(db, e, options);
    const auto synced = apps.sync(app_url);
    if (synced.status != 200) throw std::runtime_error("sync: " + synced.body.dump());
    engine::WorkerOptions o;
    o.threads = concurrency;
    o.poll = std::chrono::milliseconds(50);
    e.start(o);
    std::int64_t ended = e.stats().runs_ended;
    auto drain = [&](const std::string& event, double& app_cpu_ms, double& own_cpu_ms) {
        const double app0 = process_cpu_ms(app_pid), own0 = process_cpu_ms(0);
        const auto t0 = Clock::now();
        for (int sent = 0; sent < runs;) {
            const int batch = std::min(500, runs - sent);
            std::vector<engine::EventInput> events;
            for (int i = 0; i < batch; ++i)
                events.push_back({.name = event, .data = {{"i", sent + i}}});
            db.transact([&](storage::Transaction& tx) { e.send(tx, events); });
            sent += batch;
        }
        const std::int64_t target = ended + runs;
        while (ended < target) {
            const auto now_ended = e.await_runs_ended(ended, std::chrono::seconds(60));
            if (now_ended == ended) throw std::runtime_error(event + ": no run ended in 60 s");
            ended = now_ended;
        }
        app_cpu_ms = process_cpu_ms(app_pid) - app0;
        own_cpu_ms = process_cpu_ms(0) - own0;
        return runs / (ms_since(t0) / 1000.0);
    };
    auto one_at_a_time = [&](const std::string& event) {
        std::vector<double> ms;
        for (int i = 0; i < latency_runs + 10; ++i) {
            const auto t0 = Clock::now();
            e.send({.name = event, .data = {{"i", i}}});
            const auto now_ended = e.await_runs_ended(ended, std::chrono::seconds(30));
            if (now_ended != ended + 1)
                throw std::runtime_error(event + ": the run did not end in 30 s");
            ended = now_ended;
            if (i >= 10) ms.push_back(ms_since(t0));  // the first ten warm connections
        }
        std::sort(ms.begin(), ms.end());
        return std::pair{ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 99 / 100)]};
    };
    double native_app_cpu = 0, native_cpu = 0, sdk_app_cpu = 0, sdk_cpu = 0;
    const double native_rps = drain("bench/go", native_app_cpu, native_cpu);
    const double sdk_rps = drain("bench/sdk", sdk_app_cpu, sdk_cpu);
    const auto [native_p50, native_p99] = one_at_a_time("bench/go");
    const auto [sdk_p50, sdk_p99] = one_at_a_time("bench/sdk");
    e.stop();
    const bool failed = !db.read("SELECT 1 FROM runs WHERE status <> 'completed' LIMIT 1").empty();
    std::cout << json{{"workload", "sdk"},
                      {"backend", storage::to_string(db.backend())},
                      {"runs", runs},
                      {"steps_per_run", kSteps},
                      {"concurrency", concurrency},
                      {"signed", !options.dev},
                      {"native_rps", native_rps},
                      {"sdk_rps", sdk_rps},
                      {"sdk_over_native", sdk_rps / native_rps},
                      {"native_p50_ms", native_p50},
                      {"native_p99_ms", native_p99},
                      {"sdk_p50_ms", sdk_p50},
                      {"sdk_p99_ms", sdk_p99},
                      {"sdk_cairn_cpu_us_per_run", sdk_cpu * 1000.0 / runs},
                      {"sdk_app_cpu_us_per_run", sdk_app_cpu * 1000.0 / runs},
                      {"native_cpu_us_per_run", native_cpu * 1000.0 / runs},
                      {"all_completed", !failed}}
                     .dump()
              << std::endl;
    std::cerr << fmt::format(
        "sdk: {} runs x {} steps, {} workers on {} ({}): SDK {:.0f} runs/s ({:.0f} steps/s), "
        "native "
        "{:.0f} runs/s, ratio {:.3f}; one at a time SDK p50 {:.2f} ms p99 {:.2f} ms, native p50 "
        "{:.2f} ms; CPU per SDK run: cairn {:.0f} us, app {:.0f} us\n",
        runs, kSteps, concurrency, storage::to_string(db.backend()), options.dev ? "dev" : "signed",
        sdk_rps, sdk_rps * kSteps, native_rps, sdk_rps / native_rps, sdk_p50, sdk_p99, native_p50,
        sdk_cpu * 1000.0 / runs, sdk_app_cpu * 1000.0 / runs);
    return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Cairn engine benchmarks (bench/README.md)", "cairn_bench"};
    app.require_subcommand(1);
    std::string db_url = "sqlite://bench.db";
    int runs = 5000;
    int concurrency = 64;
    auto* tp = app.add_subcommand("throughput", "Drain N queued 5-step runs with C workers");
    tp->add_option("--db", db_url)->required();
    tp->add_option("--runs", runs)->check(CLI::Range(1, 10'000'000));
    tp->add_option("--concurrency", concurrency)->check(CLI::Range(1, 1024));
    bool no_group_commit = false;
    tp->add_flag("--no-group-commit", no_group_commit,
                 "Write each record on its own (on SQLite the storage layer still batches)");
    bool send_while_running = false;
    int keys = 0;
    tp->add_option("--keys", keys,
                   "Concurrency 1 per key over this many keys (flow control); 0 for none")
        ->check(CLI::Range(0, 1'000'000));
    tp->add_flag("--send-while-running", send_while_running,
                 "Send the events inside the timed window, at most C runs in flight");
    auto* lat = app.add_subcommand("latency", "One 5-step run at a time, event to completion");
    lat->add_option("--db", db_url)->required();
    lat->add_option("--runs", runs)->check(CLI::Range(1, 10'000'000));
    bool served = false;
    lat->add_flag("--served", served,
                  "Run on started worker threads, as in `cairn serve`, not on the sending thread");
    std::string event = "example/hello", data = "{}";
    auto* enq = app.add_subcommand("enqueue", "Write N events for cairn worker --examples");
    enq->add_option("--db", db_url)->required();
    enq->add_option("--runs", runs)->check(CLI::Range(1, 10'000'000));
    enq->add_option("--event", event);
    enq->add_option("--data", data);
    std::string app_url;
    int app_pid = 0;
    int latency_runs = 200;
    auto* sdk_cmd =
        app.add_subcommand("sdk", "An Inngest SDK function beside the same native workflow");
    sdk_cmd->add_option("--db", db_url)->required();
    sdk_cmd->add_option("--app", app_url, "The app's serve URL")->required();
    sdk_cmd->add_option("--app-pid", app_pid, "The app's process, for its CPU time");
    sdk_cmd->add_option("--runs", runs)->check(CLI::Range(1, 10'000'000));
    sdk_cmd->add_option("--concurrency", concurrency)->check(CLI::Range(1, 1024));
    sdk_cmd->add_option("--latency-runs", latency_runs)->check(CLI::Range(1, 100'000));
    CLI11_PARSE(app, argc, argv);
    spdlog::set_level(spdlog::level::warn);
    group_commit = !no_group_commit;
    try {
        auto db = storage::Database::open(db_url);
        storage::Migrator(*db, {storage::run_store_component(), sdk::apps_component()}).apply();
        if (sdk_cmd->parsed())
            return sdk_bench(*db, app_url, app_pid, runs, concurrency, latency_runs);
        if (tp->parsed()) return throughput(*db, runs, concurrency, send_while_running, keys);
        if (enq->parsed()) return enqueue(*db, runs, event, data);
        return latency(*db, runs, served);
    } catch (const std::exception& e) {
        std::cerr << "cairn_bench: " << e.what() << '\n';
        return 1;
    }
}
