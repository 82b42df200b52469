#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/workflow.hpp"
#include "sdk/driver.hpp"
#include "sdk/signing.hpp"
#include "sdk/transport.hpp"
#include "storage/migrations.hpp"

namespace cairn {
class Periodic;
}
namespace cairn::engine {
class Engine;
}
namespace cairn::storage {
class Database;
}

namespace cairn::sdk {

// The sdk component's migrations (the apps and their removed functions), for Migrator.
storage::Component apps_component();

// An app as stored: where it is served, what it registered, and when.
struct AppRecord {
    std::string id;  // the SDK's app id (appName)
    std::string url;
    std::string sdk;
    std::string framework;
    json functions = json::array();  // each as the SDK registered it (FunctionConfig)
    std::vector<std::string> warnings;
    std::int64_t synced_at = 0;
    std::int64_t version = 0;  // raised by each sync that changed it
};

struct AppsOptions {
    // Dev mode, as Inngest's dev server: no signatures anywhere, any event key.
    bool dev = false;
    // Signed mode when set: /fn/register needs the SDK's bearer, requests to apps are
    // signed and their answers checked. Dev mode (no signatures) when not.
    std::optional<SigningKey> key;
    TransportOptions transport;
};

// The SDK apps registered on the database, and their functions as workflows of this
// process's engine: each sync is written to the database, and every process reads the
// apps again each second, so all of them run the same functions. Thread-safe.
class Apps {
  public:
    Apps(storage::Database& db, engine::Engine& engine, AppsOptions options);
    ~Apps();
    Apps(const Apps&) = delete;
    Apps& operator=(const Apps&) = delete;

    // Not dev mode: /fn/register needs CAIRN_SIGNING_KEY's bearer (refused without a key),
    // and events need a Cairn API key.
    bool signed_mode() const { return !dev_; }

    // A sync's outcome: the HTTP status to answer and the body ({"ok":true,"modified":
    // bool,"app_id":...,"warnings":[...]} or {"status":N,"error":...}).
    struct Outcome {
        int status = 200;
        json body;
    };
    // POST /fn/register: `authorization` is the request's header (checked in signed mode).
    Outcome register_app(std::string_view body, std::string_view authorization);
    // Asks the app at `url` for its functions (an in-band sync: a PUT signed in signed
    // mode, answered with the registration) and stores them. An SDK that syncs out of
    // band instead posts to /fn/register; its answer is reported as it is.
    Outcome sync(const std::string& url);

    std::vector<AppRecord> list();
    std::optional<AppRecord> find(std::string_view id);
    // Removes an app: its functions take no new runs, and its runs not yet ended fail.
    bool remove(std::string_view id);

    // Reads the apps from the database into the engine when they changed (at start, and
    // every second from start()).
    void refresh();
    void start();

  private:
    Outcome store(const Registration& r);
    void load(const AppRecord& app);

    storage::Database& db_;
    engine::Engine& engine_;
    bool dev_;
    std::shared_ptr<Transport> transport_;
    std::shared_ptr<const Calls> calls_;
    std::mutex mu_;
    // Apps loaded into the engine: version, and each function's shared state.
    std::map<std::string, std::string> versions_;  // what each was loaded from; guarded by mu_
    std::map<std::string, std::vector<std::shared_ptr<Function>>> loaded_;  // guarded by mu_
    std::unique_ptr<Periodic> refresher_;
};

}  // namespace cairn::sdk
