// cairn_bench: the engine workloads of bench/run (bench/README.md).
//
//   cairn_bench throughput --db URL --runs N --concurrency C [--send-while-running]
//       N events of a 5-step no-op workflow are written first (500 per transaction), then
//       C worker threads drain them; reports runs/s and durable steps/s. With
//       --send-while-running the events are sent during the timed window instead, one
//       Engine::send each from 8 threads, at most C runs in flight (as a peer's driver
//       starts each workflow and awaits it).
//   cairn_bench enqueue --db URL --runs N [--event NAME] [--data JSON]
//       writes N events (500 per transaction) for `cairn worker --examples` to run; the
//       recovery and scaling benchmarks use it with example/hello.
//   cairn_bench latency --db URL --runs N [--served]
//       one run at a time on the calling thread: send the event, claim and execute it to
//       completion; reports p50/p90/p99 milliseconds from event accepted to run completed.
//       With --served the engine's worker threads run it, started as `cairn serve` starts
//       them, and the driver waits for the run's end to commit (Engine::await_runs_ended).
//
// Prints one JSON line on stdout and a human summary on stderr.

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <mutex>
#include <semaphore>
#include <thread>

#include "engine/engine.hpp"
#include "examples/hello_workflow.hpp"
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

void register_bench(engine::Engine& e) {
    e.add(workflow("bench").on_event("bench/go").run([](Context& ctx) {
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

int throughput(storage::Database& db, int runs, int concurrency, bool send_while_running) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    if (!group_commit) db.writes().set_max_batch(1);
    register_bench(e);
    const auto fill0 = Clock::now();
    for (int sent = 0; !send_while_running && sent < runs;) {
        const int batch = std::min(500, runs - sent);
        std::vector<engine::EventInput> events;
        for (int i = 0; i < batch; ++i)
            events.push_back({.name = "bench/go", .data = {{"i", sent + i}}});
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
                      {"wal_writes", wal1.writes - wal0.writes}}
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
    CLI11_PARSE(app, argc, argv);
    spdlog::set_level(spdlog::level::warn);
    group_commit = !no_group_commit;
    try {
        auto db = storage::Database::open(db_url);
        storage::Migrator(*db, {storage::run_store_component()}).apply();
        if (tp->parsed()) return throughput(*db, runs, concurrency, send_while_running);
        if (enq->parsed()) return enqueue(*db, runs, event, data);
        return latency(*db, runs, served);
    } catch (const std::exception& e) {
        std::cerr << "cairn_bench: " << e.what() << '\n';
        return 1;
    }
}
