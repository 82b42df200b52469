// Crash recovery with real `cairn worker` processes: kill -9, SIGSTOP past the lease, and
// an abrupt exit after every possible step. Needs the binary (CAIRN_BIN).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>

#include <filesystem>
#include <thread>

#include "common/ids.hpp"
#include "engine/engine.hpp"
#include "examples/hello_workflow.hpp"
#include "storage/migrations.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

using namespace cairn;
using namespace std::chrono_literals;
using cairn::testing::Process;
using cairn::testing::TestDb;

namespace {

std::string log_path(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() / "cairn-crash-logs";
    std::filesystem::create_directories(dir);
    return (dir / fmt::format("{}-{}.log", name, new_id().substr(24))).string();
}

std::unique_ptr<Process> start_worker(const std::string& url, const std::string& name, int lease_ms,
                                      const std::map<std::string, std::string>& env = {}) {
    return std::make_unique<Process>(
        std::vector<std::string>{cairn::testing::cairn_binary(), "worker", "--examples", "--db",
                                 url, "--workers", "4", "--lease-ms", std::to_string(lease_ms)},
        log_path(name), env);
}

std::int64_t scalar(storage::Database& db, const std::string& sql) {
    return db.exec(sql).front().get<std::int64_t>(0);
}

// Sends `n` hello events through an engine with the same registry as the workers.
void send_hello(storage::Database& db, int n, int work_ms) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    examples::register_examples(e);
    for (int i = 0; i < n; ++i) {
        e.send(engine::EventInput{"example/hello",
                                  {{"name", fmt::format("n{}", i)}, {"work_ms", work_ms}}});
    }
}

void wait_until(storage::Database& db, const std::string& sql, std::int64_t target,
                std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (scalar(db, sql) < target && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
}

// Every run completed, every one of its five steps recorded once and completed once.
void check_all_completed_exactly_once(storage::Database& db, int runs) {
    CHECK(scalar(db, "SELECT count(*) FROM runs WHERE status = 'completed'") == runs);
    CHECK(scalar(db, "SELECT count(*) FROM runs WHERE status <> 'completed'") == 0);
    CHECK(scalar(db, "SELECT count(*) FROM steps WHERE status = 'completed'") == runs * 5);
    CHECK(scalar(db, "SELECT count(*) FROM steps") == runs * 5);
    // No step result recorded twice: one completed attempt per step.
    CHECK(scalar(db, "SELECT count(*) FROM attempt_history WHERE outcome = 'completed'") ==
          runs * 5);
    CHECK(
        scalar(db,
               "SELECT count(*) FROM (SELECT run_id, step_key FROM attempt_history WHERE outcome = "
               "'completed' "
               "GROUP BY run_id, step_key HAVING count(*) > 1) dup") == 0);
    CHECK(scalar(db, "SELECT count(*) FROM queue WHERE due_at IS NOT NULL") == 0);
}

const std::string kCompleted = "SELECT count(*) FROM runs WHERE status = 'completed'";

// A LIKE pattern for the worker ids (host:pid:suffix) of `worker`'s process.
std::string owner_pattern(const Process& worker) {
    return fmt::format("%:{}:%", worker.pid());
}

// The runs `worker` holds leases on right now.
std::vector<std::string> held_by(storage::Database& db, const Process& worker) {
    std::vector<std::string> held;
    for (auto row :
         db.exec("SELECT run_id FROM queue WHERE lease_owner LIKE $1", owner_pattern(worker))) {
        held.push_back(row.get<std::string>(0));
    }
    return held;
}

// Stops `worker` (SIGSTOP) at a moment it holds runs and returns them; empty if it held
// none within `limit`. A worker started alongside others need not hold runs the moment
// they have made progress (in CI one held none when the others had finished a quarter
// of the queue), and one holding runs when asked may have finished them by the time it
// is signalled: so ask again once it is stopped, after the commits it had sent landed.
std::vector<std::string> stop_holding(storage::Database& db, Process& worker,
                                      std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (!held_by(db, worker).empty()) {
            worker.signal(SIGSTOP);
            std::this_thread::sleep_for(100ms);
            if (auto held = held_by(db, worker); !held.empty()) return held;
            worker.signal(SIGCONT);
        }
        std::this_thread::sleep_for(10ms);
    }
    MESSAGE("the worker held no runs within " << limit.count() << " s; its log:\n" << worker.log());
    return {};
}

}  // namespace

TEST_CASE("three workers, 1000 runs, one killed with SIGKILL mid-way: every run completes once") {
    if (cairn::testing::test_backend() != storage::Backend::postgres)
        return;  // several processes: Postgres
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    constexpr int kRuns = 1000;
    send_hello(t.db(), kRuns, 2);

    constexpr int kLeaseMs = 1500;
    auto victim = start_worker(t.url(), "victim", kLeaseMs);
    auto a = start_worker(t.url(), "survivor-a", kLeaseMs);
    auto b = start_worker(t.url(), "survivor-b", kLeaseMs);

    wait_until(t.db(), kCompleted, kRuns / 4, 60s);
    // The runs the victim holds when it dies: claimed, not finished.
    const std::string victim_id = owner_pattern(*victim);
    const auto held = stop_holding(t.db(), *victim, 30s);
    REQUIRE(scalar(t.db(), kCompleted) < kRuns);  // the kill lands mid-way
    victim->signal(SIGKILL);
    CHECK(victim->wait(5s) == 128 + SIGKILL);
    REQUIRE_FALSE(held.empty());

    wait_until(t.db(), kCompleted, kRuns, 120s);
    check_all_completed_exactly_once(t.db(), kRuns);

    // The victim was working, and the runs it held when it died were finished by the others
    // once its leases expired.
    CHECK(t.db()
              .exec("SELECT count(*) FROM attempt_history WHERE worker LIKE $1", victim_id)
              .front()
              .get<int>(0) > 0);
    int taken_over = 0;
    for (const auto& run : held) {
        taken_over +=
            t.db()
                .exec(
                    "SELECT count(*) FROM attempt_history WHERE run_id = $1 AND worker NOT LIKE $2",
                    run, victim_id)
                .front()
                .get<int>(0) > 0;
    }
    CHECK(taken_over > 0);

    a->signal(SIGTERM);
    b->signal(SIGTERM);
    CHECK(a->wait(15s) == 0);
    CHECK(b->wait(15s) == 0);
}

TEST_CASE("a worker frozen past its lease cannot record its late results") {
    if (cairn::testing::test_backend() != storage::Backend::postgres) return;
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    constexpr int kRuns = 200;
    send_hello(t.db(), kRuns, 20);  // slow steps: the freeze lands inside them

    constexpr int kLeaseMs = 1000;
    // A freeze may land inside a transaction: the server ends that session after 1.5 s,
    // which frees its row locks (the default is 60 s).
    const std::string url = t.url() + "?idle_tx_timeout_ms=1500";
    auto frozen = start_worker(url, "frozen", kLeaseMs);
    auto other = start_worker(url, "other", kLeaseMs);
    wait_until(t.db(), kCompleted, 20, 60s);
    const auto held = stop_holding(t.db(), *frozen, 30s);
    REQUIRE_FALSE(held.empty());
    // Stay frozen until the other worker has finished everything, the frozen worker's
    // runs included (their leases expire and are claimed again).
    wait_until(t.db(), kCompleted, kRuns, 120s);
    check_all_completed_exactly_once(t.db(), kRuns);
    const auto attempts_before = scalar(t.db(), "SELECT count(*) FROM attempt_history");

    frozen->signal(SIGCONT);  // it finishes the steps it was in and tries to record them
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (frozen->log().find("lease lost") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(50ms);
    }
    INFO("held when frozen: " << fmt::format("{}", fmt::join(held, ", ")) << "\nits log:\n"
                              << frozen->log());
    CHECK(frozen->log().find("lease lost") != std::string::npos);
    std::this_thread::sleep_for(500ms);
    CHECK(scalar(t.db(), "SELECT count(*) FROM attempt_history") ==
          attempts_before);  // nothing late got in
    check_all_completed_exactly_once(t.db(), kRuns);

    frozen->signal(SIGTERM);
    other->signal(SIGTERM);
    CHECK(frozen->wait(15s) == 0);
    CHECK(other->wait(15s) == 0);
}

TEST_CASE("a worker whose clock runs ten minutes fast takes no run another worker holds") {
    if (cairn::testing::test_backend() != storage::Backend::postgres) return;
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    send_hello(t.db(), 4, 600);  // three seconds per run, one per thread of the steady worker

    constexpr int kLeaseMs = 3000;
    auto steady = start_worker(t.url(), "steady", kLeaseMs);
    wait_until(t.db(), "SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL", 4, 30s);
    // Its clock reads ten minutes ahead: by it, every lease the steady worker holds expired
    // long ago; by the database's, none has.
    auto fast = start_worker(t.url(), "fast", kLeaseMs, {{"CAIRN_CLOCK_SKEW_MS", "600000"}});
    wait_until(t.db(), kCompleted, 4, 60s);
    check_all_completed_exactly_once(t.db(), 4);
    // A run taken from a live lease is claimed twice (epoch 2), and its holder loses it.
    INFO("the steady worker's log:\n" << steady->log());
    CHECK(scalar(t.db(), "SELECT count(*) FROM queue WHERE lease_epoch > 1") == 0);
    CHECK(steady->log().find("lease lost") == std::string::npos);

    // The fast worker alone finishes new runs: its due times are the database's too.
    steady->signal(SIGTERM);
    CHECK(steady->wait(15s) == 0);
    send_hello(t.db(), 4, 0);
    wait_until(t.db(), kCompleted, 8, 30s);
    check_all_completed_exactly_once(t.db(), 8);
    fast->signal(SIGTERM);
    CHECK(fast->wait(15s) == 0);
}

TEST_CASE("a worker that dies right after any step: the run resumes from the last recorded step") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    for (int n = 1; n <= 5; ++n) {
        CAPTURE(n);
        t.db().exec("DELETE FROM queue");  // only this iteration's run is due
        engine::SystemClock clock;
        engine::Engine e(t.db(), clock);
        examples::register_examples(e);
        const auto run_id =
            e.send(engine::EventInput{"example/hello", {{"name", "crash"}}}).run_ids.at(0);

        auto crashing = start_worker(t.url(), "crashing", 300,
                                     {{"CAIRN_CRASH_AFTER_STEPS", std::to_string(n)}});
        CHECK(crashing->wait(30s) == 137);
        auto steps = e.store().steps(run_id);
        CHECK(steps.size() == static_cast<std::size_t>(n));

        // The last step's record commits with the run's end: nothing is left to recover.
        CHECK((e.store().get_run(run_id)->status == "completed") == (n == 5));
        if (n < 5) {
            auto recovery = start_worker(t.url(), "recovery", 300);
            const auto deadline = std::chrono::steady_clock::now() + 30s;
            while (e.store().get_run(run_id)->status != "completed" &&
                   std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(50ms);
            }
            recovery->signal(SIGTERM);
            CHECK(recovery->wait(15s) == 0);
        }

        CHECK(e.store().get_run(run_id)->status == "completed");
        auto attempts = e.store().attempts(run_id);
        CHECK(attempts.size() == 5);  // no step ran twice
        for (const auto& a : attempts) CHECK(a.outcome == "completed");
        CHECK(json::parse(*e.store().get_run(run_id)->output)["greeting"] == "hello, crash");
    }
}
