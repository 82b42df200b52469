// Run store conformance on SQLite and Postgres: events, their runs, claims and leases.
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
    EventWrite wa{&a, runs, kT0}, wb{&b, runs, kT0}, ww{&awaited, runs, kT0}, wk{&keyed, runs, kT0},
        wk2{&keyed_again, runs, kT0};
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
