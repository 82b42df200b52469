#include "examples/notes_plugin.hpp"

#include <sstream>

#include "common/ids.hpp"
#include "common/json.hpp"
#include "engine/engine.hpp"
#include "server/http/router.hpp"
#include "storage/database.hpp"

namespace cairn::examples {
namespace {

constexpr std::string_view kNotesV1 = R"sql(
CREATE TABLE example_notes (
    id         TEXT    PRIMARY KEY,
    text       TEXT    NOT NULL,
    words      INTEGER,
    created_at BIGINT  NOT NULL
);
)sql";
constexpr storage::Migration kMigrations[] = {{1, "notes", kNotesV1}};

class NotesPlugin final : public plugins::Plugin {
  public:
    std::string_view name() const override { return "example-notes"; }
    std::vector<storage::Component> components() const override {
        return {{"example-notes", kMigrations}};
    }
    void start(const plugins::PluginContext& ctx) override {
        db_ = &ctx.db;
        engine_ = &ctx.engine;
    }

    // [notes-workflow]
    void register_workflows(engine::Engine& engine) override {
        engine.add(workflow("note-words").on_event("example/note").run([this](Context& ctx) {
            const std::string id = ctx.event()["data"].value("note_id", "");
            const auto words = ctx.step("count-words", [&] {
                const auto rows = db_->read("SELECT text FROM example_notes WHERE id = $1", id);
                if (rows.empty()) return -1;
                std::istringstream in(rows.front().get<std::string>(0));
                int n = 0;
                for (std::string w; in >> w;) ++n;
                return n;
            });
            ctx.step("save-count", [&] {
                db_->exec("UPDATE example_notes SET words = $1 WHERE id = $2", words.get<int>(),
                          id);
            });
            return json{{"note_id", id}, {"words", words}};
        }));
    }
    // [notes-workflow]

    void add_routes(server::Router& router) override {
        router.add(
            "POST", "/api/example/notes", server::Auth::admin,
            [this](const server::Request& req, const server::Params&) {
                std::string problem;
                const json body = parse_untrusted_json(req.body, problem);
                if (!body.is_object() || !body.contains("text") || !body["text"].is_string())
                    return server::error_response(400, "validation_failed",
                                                  "text is required and must be a string");
                const std::string id = new_id();
                // The note and its event commit together: no note without its run.
                db_->transact([&](storage::Transaction& tx) {
                    tx.exec("INSERT INTO example_notes (id, text, created_at) VALUES ($1, $2, $3)",
                            id, body["text"].get<std::string>(), engine_->clock().now_ms());
                    engine_->send(tx, {.name = "example/note", .data = {{"note_id", id}}});
                });
                server::Reply r;
                r.status = 201;
                r.body = json{{"id", id}}.dump();
                return r;
            });
        router.add(
            "GET", "/api/example/notes", server::Auth::admin,
            [this](const server::Request&, const server::Params&) {
                json notes = json::array();
                for (const auto& row :
                     db_->read("SELECT id, text, words FROM example_notes ORDER BY created_at, id"))
                    notes.push_back({{"id", row.get<std::string>(0)},
                                     {"text", row.get<std::string>(1)},
                                     {"words", row.is_null(2) ? json(nullptr)
                                                              : json(row.get<std::int64_t>(2))}});
                server::Reply r;
                r.body = json{{"notes", notes}}.dump();
                return r;
            });
    }

  private:
    storage::Database* db_ = nullptr;
    engine::Engine* engine_ = nullptr;
};

}  // namespace

std::unique_ptr<plugins::Plugin> make_notes_plugin() {
    return std::make_unique<NotesPlugin>();
}

}  // namespace cairn::examples
