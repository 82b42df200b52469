// Run store conformance on SQLite and Postgres: step records, run ends, and the reads of
// the API (paging, filters, the change feed).
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
#include "storage/run_store_fixture.hpp"

using namespace cairn::storage;
using namespace cairn::run_store_test;
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
    CHECK(f.store.steps(leases[2].run_id).size() == 1);  // dated by its cancel: kept
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

    // A run cancelled meanwhile: the cancel is a change of its own; a step dated after it
    // is not recorded, its writer is told, and the run's end is not applied.
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
    CHECK(positions == std::vector<std::pair<std::int64_t, std::string>>{{kT0 + 8, "cancelled"}});
    CHECK(f.store.steps(leases[1].run_id).empty());

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
