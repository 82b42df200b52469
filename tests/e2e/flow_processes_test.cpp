// Flow control across real `cairn worker` processes on one Postgres database: concurrency
// per key, a throttle, and slots freed by a worker's kill -9 (docs/flow-control.md).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <map>
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

std::unique_ptr<Process> worker(const std::string& url, const std::string& name, int lease_ms,
                                int threads = 4) {
    auto dir = std::filesystem::temp_directory_path() / "cairn-crash-logs";
    std::filesystem::create_directories(dir);
    return std::make_unique<Process>(
        std::vector<std::string>{cairn::testing::cairn_binary(), "worker", "--examples", "--db",
                                 url, "--workers", std::to_string(threads), "--lease-ms",
                                 std::to_string(lease_ms)},
        (dir / fmt::format("flow-{}-{}.log", name, new_id().substr(24))).string());
}

std::int64_t scalar(storage::Database& db, const std::string& sql) {
    return db.exec(sql).front().get<std::int64_t>(0);
}

bool wait_completed(storage::Database& db, const std::string& workflow, std::int64_t n,
                    std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    const std::string sql = fmt::format(
        "SELECT count(*) FROM runs WHERE workflow_id = '{}' AND status = 'completed'", workflow);
    while (std::chrono::steady_clock::now() < deadline) {
        if (scalar(db, sql) >= n) return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

struct Span {
    std::int64_t created, began, ended;
};

// Each run's step "work" by the customer of its event: when the run was created, and when
// its step began and ended.
std::map<std::string, std::vector<Span>> spans_by_customer(storage::Database& db) {
    std::map<std::string, std::vector<Span>> out;
    for (auto row : db.exec("SELECT e.data, r.created_at, s.started_at, s.ended_at FROM runs r "
                            "JOIN events e ON e.id = r.event_id JOIN steps s ON s.run_id = r.id "
                            "AND s.step_key = 'work' WHERE r.workflow_id = 'limited'")) {
        const auto data = nlohmann::json::parse(row.get<std::string>(0));
        out[data["customer"].get<std::string>()].push_back(
            {row.get<std::int64_t>(1), row.get<std::int64_t>(2), row.get<std::int64_t>(3)});
    }
    return out;
}

// The most steps of one key executing at once.
int most_at_once(const std::vector<Span>& spans) {
    std::vector<std::pair<std::int64_t, int>> edges;  // ends sort before starts at a tie
    for (const Span& s : spans) {
        edges.emplace_back(s.began, 1);
        edges.emplace_back(s.ended, -1);
    }
    std::sort(edges.begin(), edges.end());
    int now = 0, most = 0;
    for (const auto& [t, d] : edges) most = std::max(most, now += d);
    return most;
}

// The longest time the key had a free slot (fewer than `limit` executing) while one of its
// runs had been created and had not begun.
std::int64_t longest_idle_slot(const std::vector<Span>& spans, int limit) {
    std::vector<std::int64_t> times;
    for (const Span& s : spans) times.insert(times.end(), {s.created, s.began, s.ended});
    std::sort(times.begin(), times.end());
    times.erase(std::unique(times.begin(), times.end()), times.end());
    std::int64_t longest = 0, since = -1;
    for (std::int64_t t : times) {
        int running = 0, waiting = 0;
        for (const Span& s : spans) {
            running += s.began <= t && t < s.ended;
            waiting += s.created <= t && t < s.began;
        }
        if (running < limit && waiting > 0) {
            if (since < 0) since = t;
            longest = std::max(longest, t - since);
        } else {
            since = -1;
        }
    }
    return longest;
}

void send_limited(storage::Database& db, int runs, int customers, int work_ms) {
    engine::SystemClock clock;
    engine::Engine e(db, clock);
    examples::register_examples(e);
    for (int i = 0; i < runs; ++i) {
        e.send(engine::EventInput{
            "example/limited",
            {{"customer", fmt::format("c{}", i % customers)}, {"work_ms", work_ms}}});
    }
}

// A claim interval: the workers' poll. Under AddressSanitizer every process runs about
// three times slower on the same two cores, and so does each hand-over.
#ifdef __SANITIZE_ADDRESS__
constexpr std::int64_t kClaimIntervalMs = 3000;
#else
constexpr std::int64_t kClaimIntervalMs = 1000;
#endif

bool postgres() {
    return cairn::testing::test_backend() == storage::Backend::postgres;
}

}  // namespace

TEST_CASE("three workers, concurrency 2 per key over 20 keys, 500 runs: never more than 2") {
    if (!postgres()) return;  // several processes: Postgres
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    std::vector<std::unique_ptr<Process>> workers;
    // More threads (48) than slots (40): a key waits for a slot, never for a thread.
    for (const char* name : {"a", "b", "c"}) workers.push_back(worker(t.url(), name, 5000, 16));
    send_limited(t.db(), 500, 20, 20);
    REQUIRE(wait_completed(t.db(), "limited", 500, 180s));
    CHECK(scalar(t.db(), "SELECT count(*) FROM runs WHERE workflow_id = 'limited'") == 500);
    const auto spans = spans_by_customer(t.db());
    CHECK(spans.size() == 20);
    std::int64_t idle = 0;
    for (const auto& [customer, s] : spans) {
        INFO(customer);
        CHECK(s.size() == 25);
        CHECK(most_at_once(s) <= 2);
        idle = std::max(idle, longest_idle_slot(s, 2));
    }
    // Slots pass on when they free (a trigger, then a NOTIFY), not at the next poll (1 s).
    MESSAGE("longest wait with a free slot: " << idle << " ms");
    CHECK(idle < kClaimIntervalMs);
    CHECK(scalar(t.db(), "SELECT COALESCE(SUM(n), 0) FROM flow_state") == 0);
    for (auto& w : workers) w->signal(SIGTERM);
    for (auto& w : workers) CHECK(w->wait(15s) == 0);
}

TEST_CASE("a worker killed holding slots: its runs finish elsewhere once its leases expire") {
    if (!postgres()) return;
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    constexpr int kLeaseMs = 1500;
    auto victim = worker(t.url(), "victim", kLeaseMs);
    send_limited(t.db(), 40, 4, 400);
    // The victim alone at first: it takes the slots.
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (scalar(t.db(),
                  "SELECT count(*) FROM queue WHERE slots > 0 AND lease_owner IS NOT "
                  "NULL") < 4 &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    victim->signal(SIGKILL);
    CHECK(victim->wait(5s) == 128 + SIGKILL);
    auto a = worker(t.url(), "survivor-a", kLeaseMs);
    auto b = worker(t.url(), "survivor-b", kLeaseMs);
    REQUIRE(wait_completed(t.db(), "limited", 40, 120s));
    for (const auto& [customer, s] : spans_by_customer(t.db())) CHECK(most_at_once(s) <= 2);
    CHECK(scalar(t.db(), "SELECT COALESCE(SUM(n), 0) FROM flow_state") == 0);
    a->signal(SIGTERM);
    b->signal(SIGTERM);
    CHECK(a->wait(15s) == 0);
    CHECK(b->wait(15s) == 0);
}

TEST_CASE("three workers, throttle 5 a second: no second holds more than 5 starts") {
    if (!postgres()) return;
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    {
        engine::SystemClock clock;
        engine::Engine e(t.db(), clock);
        examples::register_examples(e);
        for (int i = 0; i < 30; ++i) e.send(engine::EventInput{"example/throttled", {}});
    }
    std::vector<std::unique_ptr<Process>> workers;
    for (const char* name : {"a", "b", "c"}) workers.push_back(worker(t.url(), name, 5000));
    REQUIRE(wait_completed(t.db(), "throttled", 30, 60s));
    std::vector<std::int64_t> starts;
    for (auto row : t.db().exec(
             "SELECT started_at FROM runs WHERE workflow_id = 'throttled' ORDER BY started_at"))
        starts.push_back(row.get<std::int64_t>(0));
    REQUIRE(starts.size() == 30);
    // Admitted one per 200 ms; a claim follows its admission within milliseconds, so a
    // window a little shorter than the period holds at most five starts.
    for (std::size_t i = 5; i < starts.size(); ++i) {
        INFO(i);
        CHECK(starts[i] - starts[i - 5] >= 900);
    }
    // And none is held back longer than its turn: 30 starts take about 29 intervals.
    CHECK(starts.back() - starts.front() < 29 * 200 + 2000);
    for (auto& w : workers) w->signal(SIGTERM);
    for (auto& w : workers) CHECK(w->wait(15s) == 0);
}
