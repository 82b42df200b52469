#include "sdk/apps.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <set>

#include "common/json.hpp"
#include "common/periodic.hpp"
#include "engine/engine.hpp"
#include "sdk/jcs.hpp"
#include "storage/database.hpp"

namespace cairn::sdk {

namespace {

constexpr std::string_view kSdkV1 = R"sql(
CREATE TABLE sdk_apps (
    id         TEXT   PRIMARY KEY,
    url        TEXT   NOT NULL,
    sdk        TEXT   NOT NULL,
    framework  TEXT   NOT NULL,
    functions  TEXT   NOT NULL,
    warnings   TEXT   NOT NULL,
    checksum   TEXT   NOT NULL,
    synced_at  BIGINT NOT NULL,
    version    BIGINT NOT NULL
);
CREATE TABLE sdk_removed_functions (
    slug       TEXT   PRIMARY KEY,
    app_id     TEXT   NOT NULL,
    removed_at BIGINT NOT NULL
);
)sql";

constexpr storage::Migration kMigrations[] = {{1, "SDK apps and removed functions", kSdkV1}};

constexpr std::string_view kColumns =
    "id, url, sdk, framework, functions, warnings, synced_at, version";

AppRecord read_app(const storage::Row& row) {
    AppRecord a;
    a.id = row.get<std::string>(0);
    a.url = row.get<std::string>(1);
    a.sdk = row.get<std::string>(2);
    a.framework = row.get<std::string>(3);
    a.functions = json::parse(row.get<std::string>(4), nullptr, false);
    if (!a.functions.is_array()) a.functions = json::array();
    const json w = json::parse(row.get<std::string>(5), nullptr, false);
    if (w.is_array()) {
        for (const json& s : w) {
            if (s.is_string()) a.warnings.push_back(s.get<std::string>());
        }
    }
    a.synced_at = row.get<std::int64_t>(6);
    a.version = row.get<std::int64_t>(7);
    return a;
}

std::string sha256_hex(std::string_view text) {
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(text.data()), text.size());
    char hex[crypto_hash_sha256_BYTES * 2 + 1];
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    return hex;
}

Apps::Outcome error(int status, std::string message) {
    return {status, {{"status", status}, {"error", std::move(message)}}};
}

std::string group_of(const std::string& app_id) {
    return "sdk-app:" + app_id;
}

}  // namespace

storage::Component apps_component() {
    return storage::Component{"sdk", kMigrations};
}

Apps::Apps(storage::Database& db, engine::Engine& engine, AppsOptions options)
    : db_(db),
      engine_(engine),
      dev_(options.dev),
      transport_(std::make_shared<Transport>(options.transport)) {
    auto calls = std::make_shared<Calls>();
    calls->transport = transport_;
    if (!dev_) calls->key = std::move(options.key);
    const engine::Clock& clock = engine.clock();
    calls->now_ms = [&clock] { return clock.now_ms(); };
    calls_ = std::move(calls);
}

Apps::~Apps() = default;

Apps::Outcome Apps::register_app(std::string_view body, std::string_view authorization) {
    if (!dev_ && !calls_->key)
        return error(403, "SDK apps need CAIRN_SIGNING_KEY (signed mode) or cairn serve --dev");
    if (calls_->key && !calls_->key->accepts_bearer(authorization))
        return error(401, "Authentication failed: the bearer is not CAIRN_SIGNING_KEY's");
    std::string why;
    const json j = parse_untrusted_json(body, why);
    if (j.is_discarded()) return error(400, "Invalid request: " + why);
    try {
        return store(parse_registration(j));
    } catch (const ConfigError& e) {
        return error(400, e.what());
    }
}

Apps::Outcome Apps::sync(const std::string& url) {
    if (!url.starts_with("http://") && !url.starts_with("https://"))
        return error(400, "the app's URL must be http:// or https://");
    const std::string body = canonical(json{{"url", url}});
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"},
        {"X-Inngest-Sync-Kind", "in_band"},
        {"X-Inngest-Server-Kind", calls_->key ? "cloud" : "dev"}};
    const std::int64_t now = calls_->now_ms();
    if (calls_->key)
        headers.emplace_back("X-Inngest-Signature", calls_->key->sign(body, now / 1000));
    HttpResponse resp;
    try {
        resp = transport_->request("PUT", url, headers, body);
    } catch (const TransportError& e) {
        return error(502, fmt::format("the app did not answer: {}", e.what()));
    }
    std::string why;
    const json answer = parse_untrusted_json(resp.body, why);
    if (resp.header("x-inngest-sync-kind") != "in_band") {
        // Synced out of band: the SDK posted its functions to /fn/register itself.
        const std::string message =
            answer.is_object() ? answer.value("message", "") : resp.body.substr(0, 500);
        if (resp.status >= 200 && resp.status < 300)
            return {200,
                    {{"ok", true},
                     {"modified", answer.is_object() ? answer.value("modified", false) : false},
                     {"message", message}}};
        return error(resp.status == 401 ? 401 : 502,
                     fmt::format("the app answered {}: {}", resp.status, message));
    }
    if (calls_->key &&
        !calls_->key->verify(resp.header("x-inngest-signature"), resp.body, now / 1000))
        return error(502, "the app's answer is not signed with CAIRN_SIGNING_KEY");
    if (resp.status != 200 || !answer.is_object())
        return error(502,
                     fmt::format("the app answered {}: {}", resp.status, resp.body.substr(0, 500)));
    json reg = {{"appName", answer.value("app_id", "")},
                {"url", answer.value("url", url)},
                {"sdk", answer.value("sdk", "")},
                {"framework", answer.value("framework", "")},
                {"functions", answer.value("functions", json::array())}};
    try {
        return store(parse_registration(reg));
    } catch (const ConfigError& e) {
        return error(400, e.what());
    }
}

Apps::Outcome Apps::store(const Registration& r) {
    std::set<std::string> slugs;
    json configs = json::array();
    json warnings = json::array();
    for (const FunctionConfig& f : r.functions) {
        slugs.insert(f.slug);
        configs.push_back(f.config);
        for (const auto& w : f.warnings) warnings.push_back(w);
        const Workflow* known = engine_.find(f.slug);
        if (known != nullptr && known->app != r.app_id)
            return error(400, fmt::format("function '{}': the id is taken by {}", f.slug,
                                          known->app.empty() ? std::string("a workflow of Cairn")
                                                             : "app '" + known->app + "'"));
    }
    const std::string checksum =
        sha256_hex(canonical(json{{"url", r.url}, {"functions", configs}}));
    const std::int64_t now = engine_.clock().now_ms();
    bool modified = false;
    db_.transact([&](storage::Transaction& tx) {
        auto old = tx.exec("SELECT functions, checksum FROM sdk_apps WHERE id = $1", r.app_id);
        std::vector<std::string> removed;
        if (!old.empty()) {
            if (old.front().get<std::string>(1) == checksum) {
                tx.exec(
                    "UPDATE sdk_apps SET synced_at = $2, sdk = $3, framework = $4 WHERE id = $1",
                    r.app_id, now, r.sdk, r.framework);
                return;
            }
            const json before = json::parse(old.front().get<std::string>(0), nullptr, false);
            for (const json& f : before.is_array() ? before : json::array()) {
                const std::string slug = f.is_object() ? f.value("id", "") : "";
                if (!slug.empty() && !slugs.contains(slug)) removed.push_back(slug);
            }
        }
        modified = true;
        tx.exec(
            "INSERT INTO sdk_apps (id, url, sdk, framework, functions, warnings, checksum, "
            "synced_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) ON CONFLICT (id) DO "
            "UPDATE SET url = $2, sdk = $3, framework = $4, functions = $5, warnings = $6, "
            "checksum = $7, synced_at = $8, version = sdk_apps.version + 1",
            r.app_id, r.url, r.sdk, r.framework, configs.dump(), warnings.dump(), checksum, now);
        for (const std::string& slug : slugs)
            tx.exec("DELETE FROM sdk_removed_functions WHERE slug = $1", slug);
        for (const std::string& slug : removed) {
            tx.exec(
                "INSERT INTO sdk_removed_functions (slug, app_id, removed_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (slug) DO UPDATE SET app_id = $2, removed_at = $3",
                slug, r.app_id, now);
            // Its runs that wait (queued, sleeping, waiting) are due now, to fail at once.
            tx.exec(
                "UPDATE queue SET due_at = $2 WHERE workflow_id = $1 AND lease_owner IS NULL "
                "AND due_at IS NOT NULL",
                slug, now);
        }
    });
    refresh();
    spdlog::info("sdk: app '{}' synced from {} ({} functions{})", r.app_id, r.url,
                 r.functions.size(), modified ? "" : ", unchanged");
    json body = {{"ok", true},
                 {"status", 200},
                 {"modified", modified},
                 {"app_id", r.app_id},
                 {"warnings", warnings}};
    return {200, std::move(body)};
}

std::vector<AppRecord> Apps::list() {
    std::vector<AppRecord> out;
    for (auto row : db_.read(fmt::format("SELECT {} FROM sdk_apps ORDER BY id", kColumns)))
        out.push_back(read_app(row));
    return out;
}

std::optional<AppRecord> Apps::find(std::string_view id) {
    auto rows = db_.read(fmt::format("SELECT {} FROM sdk_apps WHERE id = $1", kColumns), id);
    if (rows.empty()) return std::nullopt;
    return read_app(rows.front());
}

bool Apps::remove(std::string_view id) {
    const std::int64_t now = engine_.clock().now_ms();
    const bool removed = db_.transact([&](storage::Transaction& tx) {
        auto rows = tx.exec("SELECT functions FROM sdk_apps WHERE id = $1", id);
        if (rows.empty()) return false;
        const json fns = json::parse(rows.front().get<std::string>(0), nullptr, false);
        for (const json& f : fns.is_array() ? fns : json::array()) {
            const std::string slug = f.is_object() ? f.value("id", "") : "";
            if (slug.empty()) continue;
            tx.exec(
                "INSERT INTO sdk_removed_functions (slug, app_id, removed_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (slug) DO UPDATE SET app_id = $2, removed_at = $3",
                slug, id, now);
            tx.exec(
                "UPDATE queue SET due_at = $2 WHERE workflow_id = $1 AND lease_owner IS NULL "
                "AND due_at IS NOT NULL",
                slug, now);
        }
        tx.exec("DELETE FROM sdk_apps WHERE id = $1", id);
        return true;
    });
    if (removed) refresh();
    return removed;
}

void Apps::refresh() {
    // Versions first (cheap, every second); the configs only of apps that changed.
    std::map<std::string, std::int64_t> apps;
    for (auto row : db_.read("SELECT id, version FROM sdk_apps"))
        apps.emplace(row.get<std::string>(0), row.get<std::int64_t>(1));
    std::map<std::string, std::vector<std::string>> tombstones;  // app -> removed slugs
    for (auto row : db_.read("SELECT slug, app_id FROM sdk_removed_functions ORDER BY slug"))
        tombstones[row.get<std::string>(1)].push_back(row.get<std::string>(0));
    std::set<std::string> ids;
    for (const auto& [id, a] : apps) ids.insert(id);
    for (const auto& [id, t] : tombstones) ids.insert(id);

    std::lock_guard lock(mu_);
    for (const auto& [id, v] : versions_) ids.insert(id);
    for (const std::string& id : ids) {
        const auto app = apps.find(id);
        const auto dead = tombstones.find(id);
        // What the app's group is built from: its version and its removed functions.
        const std::string signature =
            fmt::format("{}|{}", app == apps.end() ? 0 : app->second,
                        dead == tombstones.end() ? std::string()
                                                 : fmt::format("{}", fmt::join(dead->second, ",")));
        if (const auto it = versions_.find(id); it != versions_.end() && it->second == signature)
            continue;
        std::vector<std::shared_ptr<Function>> fns;
        std::vector<Workflow> ws;
        try {
            const auto record = app == apps.end() ? std::nullopt : find(id);
            if (record) {
                const Registration r = parse_registration(
                    json{{"appName", id}, {"url", record->url}, {"functions", record->functions}});
                for (const FunctionConfig& c : r.functions) {
                    auto f = std::make_shared<Function>();
                    f->app_id = id;
                    f->config = c;
                    ws.push_back(sdk_workflow(f, calls_));
                    fns.push_back(std::move(f));
                }
            }
            if (dead != tombstones.end()) {
                for (const std::string& slug : dead->second)
                    ws.push_back(removed_workflow(slug, id));
            }
            engine_.replace_workflows(group_of(id), std::move(ws));
        } catch (const std::exception& e) {
            spdlog::error("sdk: app '{}' could not be loaded (tried again in a second): {}", id,
                          e.what());
            continue;
        }
        // In-flight runs of a function the app no longer has fail at their next call.
        std::set<std::string> kept;
        for (const auto& f : fns) kept.insert(f->config.slug);
        for (const auto& f : loaded_[id]) {
            if (!kept.contains(f->config.slug)) f->removed = true;
        }
        loaded_[id] = std::move(fns);
        versions_[id] = signature;
        if (app == apps.end() && dead == tombstones.end()) {
            loaded_.erase(id);
            versions_.erase(id);
        }
    }
}

void Apps::start() {
    refresher_ = std::make_unique<Periodic>("cairn-sdk", std::chrono::seconds(1), [this] {
        try {
            refresh();
        } catch (const std::exception& e) {
            spdlog::warn("sdk: cannot read the apps (tried again in a second): {}", e.what());
        }
    });
}

}  // namespace cairn::sdk
