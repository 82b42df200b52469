// Run store conformance: events, runs, leases and paging, on SQLite and Postgres.
#include "storage/run_store.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "common/ids.hpp"
#include "storage/migrations.hpp"
#include "support/test_db.hpp"

using namespace cairn::storage;
using cairn::testing::TestDb;

namespace {

constexpr std::int64_t kT0 = 1'800'000'000'000;  // a fixed "now"; the store never reads the clock
constexpr std::int64_t kLease = 30'000;

// A migrated database with a RunStore over it.
struct Fixture {
    TestDb t;
    RunStore store{t.db()};
    Fixture() { Migrator(t.db(), {run_store_component()}).apply(); }

    std::vector<std::string> send(std::string name, int nruns, std::int64_t now = kT0) {
        std::vector<NewRun> runs;
        for (int i = 0; i < nruns; ++i) runs.push_back({fmt::format("wf-{}", i), "v1"});
        return store.insert_event(NewEvent{std::move(name), R"({"k":1})"}, runs, now).run_ids;
    }
};

NewEvent event(std::string name, std::string data = "{}") {
    NewEvent e;
    e.name = std::move(name);
    e.data = std::move(data);
    return e;
}

std::int64_t count(Database& db, std::string_view table) {
    return db.exec(fmt::format("SELECT count(*) FROM {}", table)).front().get<std::int64_t>(0);
}

StepRecord step(const Lease& lease, std::string key, std::int64_t seq, std::string output) {
    return StepRecord{
        lease.run_id, std::move(key), seq, "completed", std::move(output), std::nullopt, 1,
        kT0,          kT0 + 1};
}

// `w` written by write_runs on its own (a batch of one, committed alone); returns it with
// `held` and `run_status` set.
RunWrite write_alone(RunStore& store, RunWrite w) {
    RunWrite* const one[] = {&w};
    store.write_runs(one);
    return w;
}

}  // namespace

TEST_CASE("an event, its runs and their queue items are written together") {
    Fixture f;
    auto ins =
        f.store.insert_event(NewEvent{"ticket/created", R"({"id":"t1"})"},
                             std::vector<NewRun>{{"ticket-created", "3"}, {"audit", "1"}}, kT0);
    CHECK_FALSE(ins.duplicate);
    REQUIRE(ins.run_ids.size() == 2);
    CHECK(cairn::is_uuid(ins.event_id));

    auto event = f.store.get_event(ins.event_id);
    REQUIRE(event);
    CHECK(event->name == "ticket/created");
    CHECK(event->data == R"({"id":"t1"})");
    CHECK(event->ts == kT0);

    auto run = f.store.get_run(ins.run_ids[0]);
    REQUIRE(run);
    CHECK(run->workflow_id == "ticket-created");
    CHECK(run->version == "3");
    CHECK(run->status == "queued");
    CHECK(run->event_name == "ticket/created");
    CHECK(run->created_at == kT0);
    CHECK(f.store.queue_depth() == 2);
    CHECK_FALSE(f.store.get_run("no-such-run"));
}

TEST_CASE("an event written in a transaction that rolls back leaves nothing (outbox)") {
    Fixture f;
    Database& db = f.t.db();
    db.transact(
        [](Transaction& tx) { tx.exec_script("CREATE TABLE tickets (id TEXT PRIMARY KEY)"); });
    CHECK_THROWS_AS(db.transact([&](Transaction& tx) {
        tx.exec("INSERT INTO tickets (id) VALUES ($1)", "t1");
        f.store.insert_event(tx, event("ticket/created"),
                             std::vector<NewRun>{{"ticket-created", "1"}}, kT0);
        throw std::runtime_error("validation failed after the insert");
    }),
                    std::runtime_error);
    CHECK(count(db, "tickets") == 0);
    CHECK(count(db, "events") == 0);
    CHECK(count(db, "runs") == 0);
    CHECK(count(db, "queue") == 0);
}

TEST_CASE("a repeated idempotency key or event id writes nothing and returns the first runs") {
    Fixture f;
    NewEvent e = event("user/signup", R"({"user":1})");
    e.idempotency_key = "signup-1";
    const std::vector<NewRun> runs{{"user-signup", "1"}};
    auto first = f.store.insert_event(e, runs, kT0);
    e.data = R"({"user":"changed"})";
    auto again = f.store.insert_event(e, runs, kT0 + 5);
    CHECK(again.duplicate);
    CHECK(again.event_id == first.event_id);
    CHECK(again.run_ids == first.run_ids);
    CHECK(f.store.get_event(first.event_id)->data == R"({"user":1})");

    NewEvent by_id = event("user/signup");
    by_id.id = first.event_id;
    auto third = f.store.insert_event(by_id, runs, kT0 + 9);
    CHECK(third.duplicate);
    CHECK(third.run_ids == first.run_ids);
    CHECK(count(f.t.db(), "events") == 1);
    CHECK(count(f.t.db(), "runs") == 1);
}

TEST_CASE("events written together in the caller's transaction commit with its rows, or not") {
    Fixture f;
    Database& db = f.t.db();
    db.transact([](Transaction& tx) {
        tx.exec_script("CREATE TABLE notes (id TEXT PRIMARY KEY, event_id TEXT)");
    });
    const std::vector<NewRun> runs{{"ticket-created", "1"}};
    // A run waits for events named "ticket/approved".
    const auto waiting = f.store.insert_event(event("ticket/created"), runs, kT0);
    db.transact([&](Transaction& tx) {
        f.store.add_wait(tx, WaitRecord{waiting.run_ids[0], "approved", "ticket/approved",
                                        "data.id", "1", kT0 + 60'000});
    });
    NewEvent a = event("ticket/created"), b = event("ticket/created"),
             awaited = event("ticket/approved"), keyed = event("ticket/created");
    keyed.idempotency_key = "k";
    NewEvent keyed_again = keyed;
    EventWrite wa{&a, runs, kT0}, wb{&b, runs, kT0}, ww{&awaited, runs, kT0},
        wk{&keyed, runs, kT0}, wk2{&keyed_again, runs, kT0};
    EventWrite* batch[] = {&wa, &wb, &ww, &wk, &wk2};
    // The caller's rows name the events the statement wrote, in the same transaction.
    db.transact([&](Transaction& tx) {
        f.store.insert_events(tx, batch);
        for (const EventWrite* w : batch) {
            if (w->written)
                tx.exec("INSERT INTO notes (id, event_id) VALUES ($1, $2)", w->inserted.event_id,
                        w->inserted.event_id);
        }
    });
    if (db.backend() != Backend::postgres) {
        // SQLite writes none: insert_event costs no round trips there.
        for (const EventWrite* w : batch) CHECK_FALSE(w->written);
        CHECK(count(db, "events") == 1);
        CHECK(count(db, "notes") == 0);
        return;
    }
    CHECK(wa.written);
    CHECK(wb.written);
    CHECK_FALSE(ww.written);  // a run waits for its name: the caller resumes it
    CHECK(wk.written);
    CHECK_FALSE(wk2.written);  // the same key twice: the first only
    CHECK(count(db, "events") == 1 + 3);
    CHECK(count(db, "notes") == 3);
    CHECK(count(db, "runs") == 1 + 3);
    for (const EventWrite* w : {&wa, &wb, &wk}) {
        REQUIRE(w->inserted.run_ids.size() == 1);
        CHECK(f.store.get_run(w->inserted.run_ids[0])->event_id == w->inserted.event_id);
    }

    SUBCASE("a caller's row that fails takes the events with it") {
        NewEvent c = event("ticket/created");
        EventWrite wc{&c, runs, kT0};
        EventWrite* one[] = {&wc};
        CHECK_THROWS_AS(db.transact([&](Transaction& tx) {
            f.store.insert_events(tx, one);
            REQUIRE(wc.written);
            tx.exec("INSERT INTO notes (id, event_id) VALUES ($1, $2)", wa.inserted.event_id,
                    wc.inserted.event_id);  // a repeated key
        }),
                        UniqueViolation);
        CHECK_FALSE(f.store.get_event(wc.inserted.event_id));
        CHECK(count(db, "runs") == 1 + 3);
    }
}

TEST_CASE("claim leases due items and skips ones not yet due or already leased") {
    Fixture f;
    f.send("a", 3, kT0);
    f.send("later", 1, kT0 + 60'000);
    auto leases = f.store.claim("w1", 10, kT0, 120'000);
    CHECK(leases.size() == 3);
    for (const auto& l : leases) {
        CHECK(l.owner == "w1");
        CHECK(l.epoch == 1);
        CHECK(l.until == kT0 + 120'000);
        // The claim starts the run in the same commit.
        const auto run = f.store.get_run(l.run_id);
        CHECK(run->status == "running");
        CHECK(run->worker == "w1");
        CHECK(run->started_at == kT0);
    }
    CHECK(f.store.claim("w2", 10, kT0 + 1, kLease).empty());
    CHECK(f.store.claim("w2", 10, kT0 + 60'000 - 1, kLease).empty());
    CHECK(f.store.claim("w2", 0, kT0, kLease).empty());
}

TEST_CASE("claim takes higher priority first, then the longest due") {
    Fixture f;
    auto low_old =
        f.store.insert_event(event("e"), std::vector<NewRun>{{"w", "1", 0}}, kT0).run_ids[0];
    auto low_new =
        f.store.insert_event(event("e"), std::vector<NewRun>{{"w", "1", 0}}, kT0 + 10).run_ids[0];
    auto high =
        f.store.insert_event(event("e"), std::vector<NewRun>{{"w", "1", 5}}, kT0 + 20).run_ids[0];
    auto one = f.store.claim("w", 1, kT0 + 100, kLease);
    REQUIRE(one.size() == 1);
    CHECK(one[0].run_id == high);
    auto two = f.store.claim("w", 1, kT0 + 100, kLease);
    REQUIRE(two.size() == 1);
    CHECK(two[0].run_id == low_old);
    CHECK(f.store.claim("w", 5, kT0 + 100, kLease)[0].run_id == low_new);
}

TEST_CASE("two concurrent claimers never get the same item") {
    Fixture f;
    constexpr int kRuns = 300;
    for (int i = 0; i < kRuns / 3; ++i) f.send("e", 3);

    constexpr int kClaimers = 4;
    std::mutex mu;
    std::vector<std::string> claimed;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < kClaimers; ++w) {
        threads.emplace_back([&, w] {
            // Each claimer has its own pool, as a separate worker process would.
            auto db = f.t.open_another();
            RunStore store(*db);
            const std::string owner = fmt::format("worker-{}", w);
            try {
                for (;;) {
                    auto leases = store.claim(owner, 7, kT0, kLease);
                    if (leases.empty()) break;
                    std::lock_guard lock(mu);
                    for (auto& l : leases) claimed.push_back(l.run_id);
                }
            } catch (const std::exception& e) {
                ++failures;
                MESSAGE(e.what());
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    CHECK(claimed.size() == kRuns);
    std::set<std::string> unique(claimed.begin(), claimed.end());
    CHECK(unique.size() == kRuns);
}

TEST_CASE("an expired lease is reclaimed with a new epoch") {
    Fixture f;
    auto run = f.send("e", 1)[0];
    auto first = f.store.claim("w1", 1, kT0, 1000);
    REQUIRE(first.size() == 1);
    CHECK(f.store.claim("w2", 1, kT0 + 999, 1000).empty());  // still held
    auto second = f.store.claim("w2", 1, kT0 + 1000, 1000);  // expired exactly now
    REQUIRE(second.size() == 1);
    CHECK(second[0].run_id == run);
    CHECK(second[0].owner == "w2");
    CHECK(second[0].epoch == first[0].epoch + 1);
}

TEST_CASE("a stale lease epoch is refused everywhere") {
    Fixture f;
    f.send("e", 1);
    Lease stale = f.store.claim("w1", 1, kT0, 1000).at(0);
    Lease current = f.store.claim("w2", 1, kT0 + 5000, kLease).at(0);
    REQUIRE(current.epoch > stale.epoch);

    CHECK_FALSE(f.store.record_step(stale, step(stale, "load", 0, "\"late\"")));
    CHECK_FALSE(f.store.renew(stale, kT0 + 5001, kLease));
    CHECK_FALSE(f.store.release(stale, kT0));
    CHECK_FALSE(
        f.store.finish_run(stale, run_status::kCompleted, "\"late\"", std::nullopt, kT0 + 5002));
    CHECK(f.store.steps(stale.run_id).empty());
    CHECK(f.store.get_run(stale.run_id)->status == "running");  // as the claim left it
    CHECK(f.store.get_run(stale.run_id)->worker == "w2");

    CHECK(f.store.record_step(current, step(current, "load", 0, "\"on time\"")));
    auto steps = f.store.steps(current.run_id);
    REQUIRE(steps.size() == 1);
    CHECK(steps[0].output == "\"on time\"");
    // The same owner with an old epoch (a paused thread of the same worker) is refused too.
    Lease same_owner_old = current;
    same_owner_old.epoch -= 1;
    CHECK_FALSE(f.store.record_step(same_owner_old, step(current, "other", 1, "1")));
}

TEST_CASE("write_runs fences each run of a batch on its own and reports its status") {
    Fixture f;
    const auto ids = f.send("e", 3);
    auto leases = f.store.claim("w1", 3, kT0, kLease);
    REQUIRE(leases.size() == 3);
    Lease stale = leases[1];
    stale.epoch -= 1;  // an old claim of the second run: its write must be refused
    CHECK(f.store.cancel_run(leases[2].run_id, kT0 + 1));  // the third is cancelled meanwhile

    const StepRecord a = step(leases[0], "a", 0, "1");
    const StepRecord b = step(stale, "b", 0, "2");
    const StepRecord c = step(leases[2], "c", 0, "3");
    const AttemptRecord att{leases[0].run_id, "a",          1,          kT0,  kT0 + 1,
                            "completed",      std::nullopt, "[\"hi\"]", "w1", 0};
    RunWrite wa{&leases[0], &a, &att}, wb{&stale, &b}, wc{&leases[2], &c};
    RunWrite* const batch[] = {&wa, &wb, &wc};
    f.t.db().transact([&](Transaction& tx) { f.store.write_runs(tx, batch); });

    CHECK(wa.held);
    CHECK(wa.run_status == "running");
    CHECK_FALSE(wb.held);
    CHECK(wb.run_status.empty());
    CHECK(wc.held);
    CHECK(wc.run_status == "cancelled");  // how the worker learns it must stop
    REQUIRE(f.store.steps(leases[0].run_id).size() == 1);
    CHECK(f.store.steps(leases[0].run_id)[0].output == "1");
    CHECK(f.store.steps(leases[1].run_id).empty());
    CHECK(f.store.steps(leases[2].run_id).size() == 1);
    const auto attempts = f.store.attempts(leases[0].run_id);
    REQUIRE(attempts.size() == 1);
    CHECK(attempts[0].logs == "[\"hi\"]");
    CHECK(f.store.get_run(leases[0].run_id)->updated_at == kT0 + 1);

    // A completed step is final, in a batch as alone.
    const StepRecord again = step(leases[0], "a", 0, "\"changed\"");
    RunWrite wagain{&leases[0], &again};
    RunWrite* const one[] = {&wagain};
    f.t.db().transact([&](Transaction& tx) { f.store.write_runs(tx, one); });
    CHECK(wagain.held);
    CHECK(f.store.steps(leases[0].run_id)[0].output == "1");
    CHECK(ids.size() == 3);

    // Ends: the first run completes with its last step in the same write; the cancelled
    // third one keeps its status; both queue items are parked. The second run, between
    // them in the batch, records a step and goes on.
    const StepRecord last = step(leases[0], "z", 1, "9");
    const StepRecord b_step = step(leases[1], "b", 0, "2");
    const RunEnd done{"completed", "\"out\"", std::nullopt, kT0 + 10};
    const RunEnd failed{"failed", std::nullopt, "{}", kT0 + 10};
    RunWrite end_a{&leases[0], &last, nullptr, &done}, end_c{&leases[2], nullptr, nullptr, &failed};
    RunWrite step_b{&leases[1], &b_step};
    RunWrite* const ends[] = {&end_a, &step_b, &end_c};
    f.store.write_runs(ends);  // committed on its own
    CHECK(end_a.held);
    CHECK(end_a.run_status == "completed");
    CHECK(step_b.held);
    CHECK(step_b.run_status == "running");
    CHECK(f.store.get_run(leases[1].run_id)->ended_at == std::nullopt);
    CHECK(f.store.steps(leases[1].run_id).size() == 1);
    CHECK(end_c.held);
    CHECK(end_c.run_status == "cancelled");
    const auto a_run = f.store.get_run(leases[0].run_id);
    CHECK(a_run->status == "completed");
    CHECK(a_run->output == "\"out\"");
    CHECK(a_run->ended_at == kT0 + 10);
    CHECK(f.store.steps(leases[0].run_id).size() == 2);
    const auto c_run = f.store.get_run(leases[2].run_id);
    CHECK(c_run->status == "cancelled");
    CHECK_FALSE(c_run->error);
    CHECK(f.store.queue_depth() == 1);  // only the second run's item, leased by w1
    CHECK_FALSE(f.store.renew(leases[0], kT0 + 11, kLease));  // the lease ended with the run
}

TEST_CASE("write_runs ends several runs in one batch, each with its own outcome") {
    Fixture f;
    f.send("e", 4);
    auto leases = f.store.claim("w1", 4, kT0, kLease);
    REQUIRE(leases.size() == 4);
    // Runs that go on between runs that end, and ends of every kind with distinct values,
    // so an outcome written to the wrong run or column shows.
    const StepRecord s1 = step(leases[1], "a", 0, "\"one\"");
    const StepRecord s3 = step(leases[3], "a", 0, "\"three\"");
    const RunEnd e0{"completed", "\"zero\"", std::nullopt, kT0 + 20};
    const RunEnd e2{"failed", std::nullopt, R"({"error":"two"})", kT0 + 22};
    const RunEnd e3{"completed", "\"three out\"", std::nullopt, kT0 + 23};
    RunWrite w0{&leases[0], nullptr, nullptr, &e0}, w1{&leases[1], &s1},
        w2{&leases[2], nullptr, nullptr, &e2}, w3{&leases[3], &s3, nullptr, &e3};
    RunWrite* const batch[] = {&w0, &w1, &w2, &w3};
    f.store.write_runs(batch);
    for (const RunWrite* w : batch) CHECK(w->held);
    CHECK(w0.run_status == "completed");
    CHECK(w1.run_status == "running");
    CHECK(w2.run_status == "failed");
    CHECK(w3.run_status == "completed");
    const auto r0 = f.store.get_run(leases[0].run_id);
    CHECK(r0->output == "\"zero\"");
    CHECK_FALSE(r0->error);
    CHECK(r0->ended_at == kT0 + 20);
    CHECK(r0->updated_at == kT0 + 20);
    const auto r1 = f.store.get_run(leases[1].run_id);
    CHECK(r1->status == "running");
    CHECK_FALSE(r1->ended_at);
    CHECK(r1->updated_at == kT0 + 1);  // the step's end
    const auto r2 = f.store.get_run(leases[2].run_id);
    CHECK(r2->status == "failed");
    CHECK_FALSE(r2->output);
    CHECK(r2->error == R"({"error":"two"})");
    CHECK(r2->ended_at == kT0 + 22);
    const auto r3 = f.store.get_run(leases[3].run_id);
    CHECK(r3->output == "\"three out\"");
    CHECK(r3->ended_at == kT0 + 23);
    CHECK(f.store.steps(leases[3].run_id).size() == 1);
    CHECK(f.store.queue_depth() == 1);  // only the run that goes on keeps its item
    CHECK(f.store.renew(leases[1], kT0 + 30, kLease));
    CHECK_FALSE(f.store.renew(leases[2], kT0 + 30, kLease));
}

TEST_CASE("write_runs keeps every byte of text that array literals would mangle") {
    Fixture f;
    f.send("e", 1);
    auto leases = f.store.claim("w1", 1, kT0, kLease);
    REQUIRE(leases.size() == 1);
    // Quotes, backslashes, braces, commas, the word NULL, an empty string, newlines and
    // non-ASCII: a batch on Postgres travels as one array literal per column.
    const std::vector<std::string> texts{R"({"a":"b \" c","d":[1,2,{}]})",
                                         "NULL",
                                         "",
                                         "line\nnext\\",
                                         "{\"x\"}",
                                         "Grüße, 日本",
                                         "a,b}{\"",
                                         " spaced "};
    std::vector<StepRecord> steps;
    for (std::size_t i = 0; i < texts.size(); ++i)
        steps.push_back(
            step(leases[0], fmt::format("s{}", i), static_cast<std::int64_t>(i), texts[i]));
    std::vector<RunWrite> writes;
    for (const auto& st : steps) writes.push_back(RunWrite{&leases[0], &st});
    std::vector<RunWrite*> batch;
    for (auto& w : writes) batch.push_back(&w);
    f.store.write_runs(batch);
    for (const RunWrite* w : batch) CHECK(w->held);
    std::map<std::string, std::optional<std::string>> stored;
    for (const auto& st : f.store.steps(leases[0].run_id)) stored[st.key] = st.output;
    REQUIRE(stored.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) CHECK(stored[fmt::format("s{}", i)] == texts[i]);
}

TEST_CASE("claim_runs returns a run without steps ready to execute, others to load") {
    Fixture f;
    const auto ids = f.send("e", 2);
    auto first = f.store.claim("w1", 2, kT0, 1000);
    REQUIRE(first.size() == 2);
    const Lease& with_step = first[0].run_id == ids[0] ? first[0] : first[1];
    CHECK(f.store.record_step(with_step, step(with_step, "a", 0, "1")));

    auto claims = f.store.claim_runs("w2", 5, kT0 + 2000, kLease);  // both leases expired
    REQUIRE(claims.size() == 2);
    for (const auto& c : claims) {
        CHECK(c.lease.owner == "w2");
        CHECK(c.lease.epoch == 2);
        if (c.lease.run_id == with_step.run_id) {
            CHECK_FALSE(c.state);  // has steps: the worker loads it
            continue;
        }
        REQUIRE(c.state);
        CHECK(c.state->run.id == c.lease.run_id);
        CHECK(c.state->run.status == "running");  // as the claim left it
        CHECK(c.state->run.worker == "w2");
        CHECK(c.state->run.started_at == kT0);  // from the first claim
        CHECK(c.state->run.updated_at == kT0 + 2000);
        CHECK(c.state->event.name == "e");
        CHECK(c.state->event.data == R"({"k":1})");
        CHECK(c.state->steps.empty());
    }
}

TEST_CASE("a claim inside a transaction commits with it, or leaves nothing when it rolls back") {
    Fixture f;
    const auto ids = f.send("e", 2);
    auto& db = f.t.db();
    SUBCASE("rolled back: nothing claimed, the runs still queued") {
        CHECK_THROWS_AS(db.transact([&](Transaction& tx) {
            CHECK(f.store.claim_runs(tx, "w1", 5, kT0, kLease).size() == 2);
            throw std::runtime_error("the batch fails after the claim");
        }),
                        std::runtime_error);
        for (const auto& id : ids) CHECK(f.store.get_run(id)->status == "queued");
        CHECK(f.store.claim("w2", 5, kT0, kLease).size() == 2);  // as if never claimed
    }
    SUBCASE("committed with the writes beside it") {
        std::vector<Claim> claims;
        db.transact([&](Transaction& tx) {
            claims = f.store.claim_runs(tx, "w1", 1, kT0, kLease);
            tx.exec("UPDATE runs SET updated_at = $2 WHERE id = $1", ids[0], kT0 + 5);
        });
        REQUIRE(claims.size() == 1);
        REQUIRE(claims[0].state);
        CHECK(claims[0].state->run.status == "running");
        CHECK(claims[0].lease.epoch == 1);
        CHECK(f.store.get_run(claims[0].lease.run_id)->worker == "w1");
        CHECK(f.store.get_run(ids[0])->updated_at == kT0 + 5);
        CHECK(f.store.claim("w2", 5, kT0, kLease).size() == 1);  // only the other one is left
    }
}

TEST_CASE("a claim does not restart a cancelled run") {
    Fixture f;
    const auto ids = f.send("e", 1);
    auto first = f.store.claim("w1", 1, kT0, 1000);
    REQUIRE(first.size() == 1);
    CHECK(f.store.cancel_run(ids[0], kT0 + 1));  // held by w1, so its lease runs out
    auto second = f.store.claim("w2", 1, kT0 + 2000, kLease);
    REQUIRE(second.size() == 1);  // claimed, for the worker to see the end and park it
    CHECK(f.store.get_run(ids[0])->status == "cancelled");
    CHECK(f.store.get_run(ids[0])->worker == "w1");
}

TEST_CASE("renew extends a lease; release makes the item due again or parks it") {
    Fixture f;
    f.send("e", 2);
    auto leases = f.store.claim("w", 2, kT0, 1000);
    REQUIRE(leases.size() == 2);
    Lease a = leases[0];
    Lease b = leases[1];

    CHECK(f.store.renew(a, kT0 + 900, 1000));
    CHECK(a.until == kT0 + 1900);
    auto reclaimed = f.store.claim("other", 5, kT0 + 1500, kLease);  // b expired, a renewed
    REQUIRE(reclaimed.size() == 1);
    CHECK(reclaimed[0].run_id == b.run_id);

    CHECK(f.store.release(a, kT0 + 10'000));  // e.g. a sleep until then
    CHECK(f.store.claim("w", 5, kT0 + 9'999, 1000).empty());
    auto again = f.store.claim("w", 5, kT0 + 10'000, 1000);
    REQUIRE(again.size() == 1);
    CHECK(again[0].run_id == a.run_id);
    CHECK(again[0].epoch == a.epoch + 1);

    CHECK(f.store.release(again[0], std::nullopt));  // parked: never due
    CHECK(f.store.claim("w", 5, kT0 + 10'000'000, 1000).size() ==
          1);  // only b's new lease expiring
}

TEST_CASE("finish_run records the outcome and parks the run") {
    Fixture f;
    f.send("e", 1);
    Lease l = f.store.claim("w", 1, kT0, kLease).at(0);
    CHECK(f.store.record_step(l, step(l, "one", 0, R"({"a":1})")));
    CHECK(f.store.record_step(l, step(l, "two", 1, R"([1,2])")));
    CHECK(
        f.store.finish_run(l, run_status::kCompleted, R"({"done":true})", std::nullopt, kT0 + 50));
    auto run = f.store.get_run(l.run_id);
    CHECK(run->status == "completed");
    CHECK(run->output == R"({"done":true})");
    CHECK(run->ended_at == kT0 + 50);
    CHECK(f.store.queue_depth() == 0);
    CHECK(f.store.claim("w", 5, kT0 + 10'000'000, kLease).empty());
    auto steps = f.store.steps(l.run_id);
    REQUIRE(steps.size() == 2);
    CHECK(steps[0].key == "one");
    CHECK(steps[1].key == "two");
}

TEST_CASE("a completed step is final: a second write of the key changes nothing") {
    Fixture f;
    f.send("e", 1);
    Lease l = f.store.claim("w", 1, kT0, kLease).at(0);
    StepRecord failed = step(l, "call-api", 0, "");
    failed.status = "failed";
    failed.output.reset();
    failed.error = R"({"message":"timeout"})";
    CHECK(f.store.record_step(l, failed));
    StepRecord ok = step(l, "call-api", 0, R"("first")");
    ok.attempts = 2;
    CHECK(f.store.record_step(l, ok));
    CHECK(f.store.record_step(l, step(l, "call-api", 0, R"("second")")));
    auto steps = f.store.steps(l.run_id);
    REQUIRE(steps.size() == 1);
    CHECK(steps[0].status == "completed");
    CHECK(steps[0].output == R"("first")");
    CHECK(steps[0].attempts == 2);
    CHECK(steps[0].started_at == kT0);
}

TEST_CASE("a step's attempts read back the same whether its row or step_attempts keeps them") {
    Fixture f;
    f.send("e", 1);
    Lease l = f.store.claim("w", 1, kT0, kLease).at(0);
    auto write = [&](const StepRecord& st, const AttemptRecord& at) {
        REQUIRE(write_alone(f.store, {&l, &st, &at}).held);
    };
    auto attempt = [&](std::string key, std::int64_t n, std::int64_t started, std::string outcome,
                       std::optional<std::string> error, std::string logs) {
        return AttemptRecord{
            l.run_id,         std::move(key),  n,   started, started + 1, std::move(outcome),
            std::move(error), std::move(logs), "w", 0};
    };
    // "a" completes on its first attempt: kept in its step's row (engine 5).
    write(step(l, "a", 0, "1"), attempt("a", 1, kT0, "completed", std::nullopt, R"(["a-log"])"));
    // "b" fails once, then completes: both attempts are rows of step_attempts.
    StepRecord b = step(l, "b", 1, "");
    b.status = "retrying";
    b.output.reset();
    b.error = R"({"message":"boom"})";
    b.wake_at = kT0 + 5;
    write(b, attempt("b", 1, kT0 + 2, "failed", b.error, "[]"));
    StepRecord b_done = step(l, "b", 1, "2");
    b_done.attempts = 2;
    write(b_done, attempt("b", 2, kT0 + 6, "completed", std::nullopt, "[]"));
    // "c" as written before engine 5: its first attempt a row of step_attempts.
    f.t.db().transact([&](Transaction& tx) {
        f.store.write_step(tx, step(l, "c", 2, "3"));
        f.store.write_attempt(tx, attempt("c", 1, kT0 + 8, "completed", std::nullopt, "[]"));
    });
    CHECK(count(f.t.db(), "steps WHERE attempt_generation IS NOT NULL") == 1);
    CHECK(count(f.t.db(), "step_attempts") == 3);

    auto keys = [&](std::string_view run_id) {
        std::vector<std::string> out;
        for (const auto& a : f.store.attempts(run_id))
            out.push_back(
                fmt::format("{}#{}/{}:{}", a.step_key, a.attempt, a.generation, a.outcome));
        return out;
    };
    CHECK(keys(l.run_id) == std::vector<std::string>{"a#1/0:completed", "b#1/0:failed",
                                                     "b#2/0:completed", "c#1/0:completed"});
    const auto all = f.store.attempts(l.run_id);
    REQUIRE(all.size() == 4);
    CHECK(all[0].run_id == l.run_id);
    CHECK(all[0].started_at == kT0);  // the step's own times, which completion fixed
    CHECK(all[0].ended_at == kT0 + 1);
    CHECK(all[0].logs == R"(["a-log"])");
    CHECK(all[0].worker == "w");
    CHECK_FALSE(all[0].error);
    CHECK(all[1].error == R"({"message":"boom"})");
    CHECK(all[1].started_at == kT0 + 2);

    // A retry keeps the completed steps and their attempts; a step of the next generation
    // that completes on its first attempt is kept in its row too, under that generation.
    CHECK(f.store.finish_run(l, "failed", std::nullopt, "{}", kT0 + 20));
    REQUIRE(f.store.retry_run(l.run_id, kT0 + 21) == RunStore::RetryResult::ok);
    l = f.store.claim("w", 1, kT0 + 22, kLease).at(0);
    AttemptRecord d = attempt("d", 1, kT0 + 23, "completed", std::nullopt, "[]");
    d.generation = 1;
    write(step(l, "d", 3, "4"), d);
    CHECK(keys(l.run_id) == std::vector<std::string>{"a#1/0:completed", "b#1/0:failed",
                                                     "b#2/0:completed", "c#1/0:completed",
                                                     "d#1/1:completed"});

    // A replay copies steps, not their attempts.
    const auto replay = f.store.replay_run(l.run_id, "v1", std::string("c"), kT0 + 30);
    REQUIRE(std::holds_alternative<std::string>(replay));
    CHECK(f.store.steps(std::get<std::string>(replay)).size() == 2);
    CHECK(f.store.attempts(std::get<std::string>(replay)).empty());
}

TEST_CASE("paging returns every row exactly once, also while runs arrive") {
    Fixture f;
    constexpr int kRuns = 157;
    std::set<std::string> all;
    for (int i = 0; i < kRuns; ++i) all.insert(f.send("e", 1, kT0 + i)[0]);

    std::vector<std::string> seen;
    std::optional<std::string> cursor;
    int pages = 0;
    do {
        auto page = f.store.list_runs({}, cursor, 10);
        for (auto& r : page.runs) seen.push_back(r.id);
        cursor = page.next_cursor;
        ++pages;
        if (pages == 3) f.send("e", 2, kT0 + 1000);  // newer runs must not shift the pages
    } while (cursor);
    CHECK(pages == 16);
    CHECK(seen.size() == kRuns);
    CHECK(std::set<std::string>(seen.begin(), seen.end()) == all);
    CHECK(std::is_sorted(seen.rbegin(), seen.rend()));  // newest first
}

TEST_CASE("insert_events writes plain new events together and leaves the rest to the caller") {
    Fixture f;
    Database& db = f.t.db();
    NewEvent plain = event("order/placed", R"({"n":1})");
    if (db.backend() != Backend::postgres) {
        // None written: on SQLite insert_event is as cheap, and the caller sends each.
        const std::vector<NewRun> one_run{{"wf", "1"}};
        EventWrite w{&plain, one_run, kT0};
        EventWrite* one[] = {&w};
        f.store.insert_events(one);
        CHECK_FALSE(w.written);
        CHECK(count(db, "events") == 0);
        return;
    }
    // An earlier event with a key, and a run waiting for events named "order/paid".
    NewEvent earlier = event("order/placed");
    earlier.idempotency_key = "seen";
    const auto first = f.store.insert_event(earlier, std::vector<NewRun>{{"wf", "1"}}, kT0);
    db.transact([&](Transaction& tx) {
        f.store.add_wait(
            tx, WaitRecord{first.run_ids.at(0), "paid", "order/paid", "data.n", "1", kT0 + 60'000});
    });

    const std::vector<NewRun> two{{"wf-a", "1", 5}, {"wf-b", "2"}};
    NewEvent keyed = event("order/placed");
    keyed.idempotency_key = "fresh";
    NewEvent keyed_again = keyed;  // the same key later in the same batch
    keyed_again.data = R"({"second":true})";
    NewEvent repeat = event("order/placed");
    repeat.idempotency_key = "seen";
    NewEvent awaited = event("order/paid", R"({"n":1})");
    NewEvent no_runs = event("order/noted");
    NewEvent given_id = event("order/placed");
    given_id.id = "given-1";
    NewEvent given_id_again = given_id;

    EventWrite w_plain{&plain, two, kT0 + 1}, w_keyed{&keyed, two, kT0 + 2},
        w_keyed_again{&keyed_again, two, kT0 + 3}, w_repeat{&repeat, two, kT0 + 4},
        w_awaited{&awaited, two, kT0 + 5}, w_no_runs{&no_runs, {}, kT0 + 6},
        w_given{&given_id, two, kT0 + 7}, w_given_again{&given_id_again, two, kT0 + 8};
    EventWrite* batch[] = {&w_plain,   &w_keyed,   &w_keyed_again, &w_repeat,
                           &w_awaited, &w_no_runs, &w_given,       &w_given_again};
    f.store.insert_events(batch);

    CHECK(w_plain.written);
    CHECK(w_keyed.written);
    CHECK_FALSE(w_keyed_again.written);
    CHECK_FALSE(w_repeat.written);
    CHECK_FALSE(w_awaited.written);
    CHECK(w_no_runs.written);
    CHECK(w_given.written);
    CHECK(w_given.inserted.event_id == "given-1");
    CHECK_FALSE(w_given_again.written);
    for (const EventWrite* w : {&w_keyed_again, &w_repeat, &w_awaited, &w_given_again})
        CHECK(w->inserted.run_ids.empty());
    CHECK(w_no_runs.inserted.run_ids.empty());

    // What was written is whole: each event with its runs, queued and due at its time.
    for (const EventWrite* w : {&w_plain, &w_keyed, &w_given}) {
        const auto ev = f.store.get_event(w->inserted.event_id);
        REQUIRE(ev);
        CHECK(ev->data == w->event->data);
        CHECK(ev->received_at == w->now);
        REQUIRE(w->inserted.run_ids.size() == 2);
        const auto run = f.store.get_run(w->inserted.run_ids[0]);
        REQUIRE(run);
        CHECK(run->workflow_id == "wf-a");
        CHECK(run->event_id == w->inserted.event_id);
        CHECK(run->status == "queued");
        CHECK(run->created_at == w->now);
        CHECK(f.store.get_run(w->inserted.run_ids[1])->workflow_id == "wf-b");
        auto q =
            db.exec("SELECT due_at, priority FROM queue WHERE run_id = $1", w->inserted.run_ids[0]);
        REQUIRE(q.size() == 1);
        CHECK(q.front().get<std::int64_t>(0) == w->now);
        CHECK(q.front().get<std::int64_t>(1) == 5);
    }
    CHECK(f.store.get_event(w_no_runs.inserted.event_id));
    CHECK(count(db, "events") == 5);  // earlier, plain, keyed, no_runs, given
    CHECK(count(db, "runs") == 1 + 3 * 2);
    CHECK(count(db, "queue") == 1 + 3 * 2);
    CHECK(db.exec("SELECT data FROM events WHERE idempotency_key = 'fresh'")
              .front()
              .get<std::string>(0) == keyed.data);
}

TEST_CASE("insert_event can write the runs claimed, as a claim would have left them") {
    Fixture f;
    Database& db = f.t.db();
    const std::vector<NewRun> two{{"wf-a", "1", 5}, {"wf-b", "2"}};
    NewEvent e = event("order/placed", R"({"n":7})");
    e.idempotency_key = "once";
    ClaimedBy claimed{"w1", kT0 + kLease, {}};
    const auto ins = db.transact(
        [&](Transaction& tx) { return f.store.insert_event(tx, e, two, kT0, &claimed); });
    REQUIRE(ins.run_ids.size() == 2);
    REQUIRE(claimed.claims.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        const Claim& c = claimed.claims[i];
        CHECK(c.lease.run_id == ins.run_ids[i]);
        CHECK(c.lease.owner == "w1");
        CHECK(c.lease.epoch == 1);
        CHECK(c.lease.until == kT0 + kLease);
        // The state handed to the worker is the one a load reads back.
        REQUIRE(c.state);
        const auto loaded = f.store.load(c.lease.run_id);
        REQUIRE(loaded);
        const RunRecord& want = loaded->run;
        const RunRecord& got = c.state->run;
        CHECK(want.status == "running");
        CHECK(got.status == want.status);
        CHECK(got.workflow_id == want.workflow_id);
        CHECK(got.version == want.version);
        CHECK(got.event_id == want.event_id);
        CHECK(got.event_name == want.event_name);
        CHECK(got.created_at == want.created_at);
        CHECK(got.updated_at == want.updated_at);
        CHECK(got.started_at == want.started_at);
        CHECK(got.worker == want.worker);
        CHECK(c.state->event.id == loaded->event.id);
        CHECK(c.state->event.data == loaded->event.data);
        CHECK(c.state->event.idempotency_key == loaded->event.idempotency_key);
        CHECK(c.state->steps.empty());
    }
    auto q =
        db.exec("SELECT lease_owner, lease_epoch, due_at, priority FROM queue WHERE run_id = $1",
                ins.run_ids[0]);
    REQUIRE(q.size() == 1);
    CHECK(q.front().get<std::string>(0) == "w1");
    CHECK(q.front().get<std::int64_t>(1) == 1);
    CHECK(q.front().get<std::int64_t>(2) == kT0 + kLease);
    CHECK(q.front().get<std::int64_t>(3) == 5);

    // The lease is an ordinary one: it fences writes, keeps other claimers off until it
    // expires, and is then claimed again with a new epoch.
    const Lease lease = claimed.claims[0].lease;
    CHECK(f.store.record_step(lease, step(lease, "a", 0, "1")));
    CHECK(f.store.claim("w2", 5, kT0 + 1, kLease).empty());
    const auto again = f.store.claim("w2", 5, kT0 + kLease, kLease);
    CHECK(again.size() == 2);
    for (const Lease& l : again) CHECK(l.epoch == 2);
    CHECK_FALSE(f.store.record_step(lease, step(lease, "b", 1, "2")));

    // A repeat writes nothing, so it claims nothing.
    ClaimedBy repeat{"w1", kT0 + kLease, {}};
    const auto dup = db.transact(
        [&](Transaction& tx) { return f.store.insert_event(tx, e, two, kT0 + 5, &repeat); });
    CHECK(dup.duplicate);
    CHECK(dup.run_ids == ins.run_ids);
    CHECK(repeat.claims.empty());
    CHECK(count(db, "runs") == 2);

    if (db.backend() != Backend::postgres) return;
    // And the statement of a batch of sends (insert_events).
    NewEvent batched = event("order/placed");
    EventWrite w{&batched, std::span(two).first(1), kT0 + 20};
    ClaimedBy batch_claim{"w4", kT0 + 20 + kLease, {}};
    w.claimed = &batch_claim;
    EventWrite* one_write[] = {&w};
    f.store.insert_events(one_write);
    REQUIRE(w.written);
    REQUIRE(w.claimed->claims.size() == 1);
    const Claim& b = w.claimed->claims[0];
    CHECK(b.lease.run_id == w.inserted.run_ids.at(0));
    CHECK(b.lease.owner == "w4");
    CHECK(b.lease.epoch == 1);
    CHECK(f.store.load(b.lease.run_id)->run.status == "running");
    CHECK(f.store.record_step(b.lease, step(b.lease, "a", 0, "1")));
}

TEST_CASE("list_runs filters by workflow, status, event name, time and id prefix") {
    Fixture f;
    auto a = f.store.insert_event(event("ticket/created"),
                                  std::vector<NewRun>{{"ticket-created", "1"}}, kT0);
    auto b = f.store.insert_event(event("user/signup"), std::vector<NewRun>{{"user-signup", "1"}},
                                  kT0 + 100);
    auto c = f.store.insert_event(event("user/signup"), std::vector<NewRun>{{"user-signup", "1"}},
                                  kT0 + 200);
    Lease l = f.store.claim("w", 3, kT0 + 300, kLease).at(0);
    CHECK(
        f.store.finish_run(l, run_status::kFailed, std::nullopt, R"({"message":"x"})", kT0 + 301));

    auto ids = [&](const RunFilter& filter) {
        std::vector<std::string> out;
        for (auto& r : f.store.list_runs(filter, std::nullopt, 100).runs) out.push_back(r.id);
        return out;
    };
    CHECK(ids({.workflow_id = "user-signup"}) == std::vector{c.run_ids[0], b.run_ids[0]});
    CHECK(ids({.status = "failed"}) == std::vector{l.run_id});
    CHECK(ids({.event_name = "ticket/created"}) == a.run_ids);
    CHECK(ids({.created_from = kT0 + 100, .created_to = kT0 + 200}) == b.run_ids);
    CHECK(ids({.search = b.run_ids[0].substr(0, 30)}) == b.run_ids);
    CHECK(ids({.search = c.event_id}) == c.run_ids);
    CHECK(ids({.search = "%"}).empty());  // wildcards match literally
    CHECK(ids({.workflow_id = "user-signup", .status = "failed"}).empty());
    CHECK_THROWS_AS(f.store.list_runs({}, std::nullopt, 0), std::invalid_argument);
    CHECK_THROWS_AS(f.store.list_runs({}, std::nullopt, 1001), std::invalid_argument);
}

TEST_CASE(
    "the change feed pages by (updated_at, id), also through many changes in one millisecond") {
    Fixture f;
    std::set<std::string> all;
    for (int i = 0; i < 7; ++i) all.insert(f.send("e", 1, kT0)[0]);  // all changed at kT0
    std::set<std::string> seen;
    std::int64_t after_ms = kT0 - 1;
    std::string after_id = "~";
    for (int page = 0; page < 10; ++page) {
        auto changes = f.store.changes_since(after_ms, after_id, 3);
        for (const auto& r : changes) CHECK(seen.insert(r.id).second);  // never twice
        if (changes.size() < 3) break;
        after_ms = changes.back().updated_at;
        after_id = changes.back().id;
    }
    CHECK(seen == all);
    CHECK(f.store.changes_since(kT0, "~", 100).empty());  // "~": everything at kT0 is done
}

TEST_CASE("a step's change reaches the change feed and its run's updated_at, not its run's row") {
    Fixture f;
    const auto ids = f.send("e", 2, kT0);
    const auto leases = f.store.claim("w", 2, kT0 + 1, kLease);  // the runs' rows change at +1
    REQUIRE(leases.size() == 2);
    auto row_updated_at = [&](const std::string& id) {
        return f.t.db()
            .exec("SELECT updated_at FROM runs WHERE id = $1", id)
            .front()
            .get<std::int64_t>(0);
    };
    const std::int64_t claimed_at = row_updated_at(leases[0].run_id);

    StepRecord a = step(leases[0], "a", 0, "1");
    a.started_at = kT0 + 5;
    a.ended_at = kT0 + 7;
    const RunWrite w = write_alone(f.store, {&leases[0], &a});
    REQUIRE(w.held);
    CHECK(w.run_status == "running");  // learnt without writing the run
    CHECK(row_updated_at(leases[0].run_id) == claimed_at);
    CHECK(f.store.get_run(leases[0].run_id)->updated_at == kT0 + 7);
    CHECK(f.store.load(leases[0].run_id)->run.updated_at == kT0 + 7);

    const auto after = f.store.changes_since(kT0 + 1, "~", 100);
    REQUIRE(after.size() == 1);
    CHECK(after[0].id == leases[0].run_id);
    CHECK(after[0].updated_at == kT0 + 7);  // its position in the feed
    CHECK(f.store.changes_since(kT0 + 7, "~", 100).empty());

    // A run cancelled meanwhile: the cancel is a change of its own; a step written after
    // it is told, and the run's end is not applied.
    CHECK(f.store.cancel_run(leases[1].run_id, kT0 + 8));
    StepRecord b = step(leases[1], "b", 0, "2");
    b.ended_at = kT0 + 9;
    const RunEnd b_done{"completed", "\"out\"", std::nullopt, kT0 + 9};
    const RunWrite wb = write_alone(f.store, {&leases[1], &b, nullptr, &b_done});
    CHECK(wb.held);
    CHECK(wb.run_status == "cancelled");
    std::vector<std::pair<std::int64_t, std::string>> positions;
    for (const auto& r : f.store.changes_since(kT0 + 7, "~", 100))
        positions.emplace_back(r.updated_at, r.status);
    CHECK(positions == std::vector<std::pair<std::int64_t, std::string>>{{kT0 + 8, "cancelled"},
                                                                         {kT0 + 9, "cancelled"}});

    // A run's end and its last step at the same time are one position.
    StepRecord z = step(leases[0], "z", 1, "3");
    z.ended_at = kT0 + 11;
    const RunEnd a_done{"completed", "\"out\"", std::nullopt, kT0 + 11};
    CHECK(write_alone(f.store, {&leases[0], &z, nullptr, &a_done}).run_status == "completed");
    const auto ended = f.store.changes_since(kT0 + 9, "~", 100);
    REQUIRE(ended.size() == 1);
    CHECK(ended[0].id == leases[0].run_id);
    CHECK(ended[0].updated_at == kT0 + 11);
    CHECK(ended[0].status == "completed");
    CHECK(row_updated_at(leases[0].run_id) == kT0 + 11);
    CHECK(ids.size() == 2);
}

TEST_CASE("the change feed pages through steps and runs changed in one millisecond") {
    Fixture f;
    constexpr int kRuns = 5;
    std::vector<std::string> ids;
    for (int i = 0; i < kRuns; ++i) ids.push_back(f.send("e", 1, kT0)[0]);
    auto leases = f.store.claim("w", kRuns, kT0, kLease);
    REQUIRE(leases.size() == kRuns);
    // Every run's row changed at kT0 (the claim), and two steps of each at kT0 + 1, also
    // written in one batch: eleven (run, time) positions in two milliseconds.
    std::vector<StepRecord> records;
    for (const Lease& l : leases) {
        for (int i = 0; i < 2; ++i) {
            StepRecord r = step(l, fmt::format("s{}", i), i, "0");
            r.ended_at = kT0 + 1;
            records.push_back(r);
        }
    }
    for (const auto& r : records) {
        const auto& lease = *std::find_if(leases.begin(), leases.end(),
                                          [&](const Lease& l) { return l.run_id == r.run_id; });
        CHECK(write_alone(f.store, {&lease, &r}).held);
    }
    std::map<std::int64_t, std::set<std::string>> seen;
    std::int64_t after_ms = kT0 - 1;
    std::string after_id = "~";
    for (int page = 0; page < 20; ++page) {
        auto changes = f.store.changes_since(after_ms, after_id, 3);
        for (const auto& r : changes) CHECK(seen[r.updated_at].insert(r.id).second);  // once
        if (changes.size() < 3) break;
        after_ms = changes.back().updated_at;
        after_id = changes.back().id;
    }
    const std::set<std::string> all(ids.begin(), ids.end());
    CHECK(seen[kT0] == all);
    CHECK(seen[kT0 + 1] == all);
    CHECK(seen.size() == 2);
}
