#pragma once

// Part of Cairn's public API (docs/library.md): a database, an engine on it, and the runs
// it executes, for a program that links Cairn as a library.

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "cairn/event.hpp"
#include "cairn/workflow.hpp"

namespace cairn {

class Engine;
class Server;

// A Cairn database, opened by URL and migrated to this version's engine tables:
//   sqlite://relative/path.db, sqlite:///absolute/path.db, sqlite::memory:
//   postgres://user:pass@host:port/db?pool=8
// Several processes (services embedding Cairn, `cairn serve`, `cairn worker`) may share
// one; each executes the runs of the workflows it registered. Throws std::runtime_error
// with the reason when the URL is malformed or the database cannot be opened.
class Database {
  public:
    explicit Database(const std::string& url);
    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    std::string backend() const;  // "sqlite" or "postgres"
    std::string url() const;      // with any password replaced by "***"

  private:
    friend class Engine;
    friend class Server;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// A run as it stands.
struct RunInfo {
    std::string id;
    std::string workflow_id;
    std::string status;     // queued, running, sleeping, waiting, completed, failed, cancelled
    nlohmann::json output;  // the workflow's result once completed, else null
    nlohmann::json error;   // {type, message, ...} once failed, else null
    std::int64_t created_at = 0;
    std::optional<std::int64_t> ended_at;
};

enum class RetryResult { ok, not_found, not_ended };

// The durable execution engine of one process: add workflows, then send events and
// start workers. Thread-safe after the workflows are added.
class Engine {
  public:
    // `name` is how this process appears beside the workflows it executes in
    // `cairn workflows list` and the inspector.
    explicit Engine(Database& db, std::string name = "app");
    ~Engine();  // stops the workers
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Registers a workflow (build one with cairn::workflow("id")...run(fn)). Throws
    // std::invalid_argument for an empty or repeated id.
    void add(Workflow workflow);

    // Records the event and starts a run of every workflow of this engine it triggers;
    // resumes runs (of any process) waiting for it. Returns once it is durable.
    SendResult send(const EventInput& event);

    // Starts worker threads that execute this engine's runs (and runs others queue for
    // its workflows, e.g. a retry from `cairn runs retry`); stop() or the destructor ends
    // them, each run yielding at its next step.
    void start(WorkerOptions options = {});
    void stop();

    // Executes due runs on the calling thread until none is due; returns how many
    // executions ran. For tests and tools that want no threads.
    int run_until_idle();

    std::optional<RunInfo> run(std::string_view run_id);
    // Waits until the run has ended or `timeout` passes; returns it as it then stands
    // (nullopt for an unknown id).
    std::optional<RunInfo> wait(std::string_view run_id, std::chrono::milliseconds timeout);

    // Run control, as `cairn runs cancel|retry|replay` (any process may ask; the
    // process that registered the workflow executes). cancel is false when the run had
    // already ended or does not exist. replay throws std::invalid_argument for an unknown
    // run or step and returns the new run's id.
    bool cancel(std::string_view run_id);
    RetryResult retry(std::string_view run_id);
    std::string replay(std::string_view run_id,
                       const std::optional<std::string>& from_step = std::nullopt);

    // Pauses a workflow on the database: its runs queue up and no process starts them
    // until resume(). False when it already was (not) paused.
    bool pause(std::string_view workflow_id);
    bool resume(std::string_view workflow_id);

  private:
    friend class Server;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cairn
