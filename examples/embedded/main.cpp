// A service with durable workflows of its own, on Cairn as a library.
//
//   embedded DATABASE_URL [LISTEN]      (LISTEN default 127.0.0.1:8090)
//
// Registers two workflows, sends one event to each, executes runs until SIGINT/SIGTERM
// and serves the engine API and the inspector on LISTEN. `cairn runs list`, `cairn
// workflows list` and `cairn serve` on the same database show its runs, and a run retried
// with `cairn runs retry` is executed here.

#include <cairn/cairn.hpp>
#include <filesystem>
#include <iostream>
#include <string>

namespace {

// Greets: one step, recorded once however often the run is replayed.
cairn::Workflow greet() {
    return cairn::workflow("embedded-greet")
        .on_event("embedded/greet")
        .run([](cairn::Context& ctx) {
            const std::string name = ctx.event()["data"].value("name", "world");
            const auto text = ctx.step("compose", [&] { return "Hello, " + name + "!"; });
            return cairn::json{{"greeting", text}};
        });
}

// Charges a card: declined (failing at once, no retries) until the file the event names
// exists, as a card is until its owner tops up. Retrying the failed run then succeeds.
cairn::Workflow charge() {
    return cairn::workflow("embedded-charge")
        .on_event("embedded/charge")
        .retries(0)
        .run([](cairn::Context& ctx) {
            const cairn::json data = ctx.event()["data"];
            const auto receipt = ctx.step("charge", [&] {
                if (!std::filesystem::exists(data.value("funds_file", std::string())))
                    throw cairn::NonRetriableError("card declined: insufficient funds");
                return cairn::json{{"charged", data.value("amount", 0)}};
            });
            return cairn::json{{"receipt", receipt}};
        });
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: embedded DATABASE_URL [LISTEN]\n";
        return 2;
    }
    try {
        cairn::Database db(argv[1]);
        cairn::Engine engine(db, "embedded");
        engine.add(greet());
        engine.add(charge());

        const auto greeted = engine.send({.name = "embedded/greet", .data = {{"name", "Ada"}}});
        const auto charged =
            engine.send({.name = "embedded/charge",
                         .data = {{"amount", 42}, {"funds_file", db.backend() + "-funds"}}});
        engine.start({.threads = 2});

        cairn::Server server(db, engine, {.listen = argc > 2 ? argv[2] : "127.0.0.1:8090"});
        std::cout << "cairn " << CAIRN_VERSION << " embedded on " << db.url() << ", serving http://"
                  << server.address() << std::endl;
        for (const auto& id : {greeted.run_ids.at(0), charged.run_ids.at(0)}) {
            const auto run = engine.wait(id, std::chrono::seconds(30));
            std::cout << "run " << id << " (" << run->workflow_id << "): " << run->status
                      << std::endl;
        }
        server.run();  // until SIGINT or SIGTERM
        engine.stop();
    } catch (const std::exception& e) {
        std::cerr << "embedded: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
