#include "cli/sdk_commands.hpp"

#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.hpp"
#include "common/time.hpp"
#include "sdk/apps.hpp"

namespace cairn::cli {

using nlohmann::json;

int apps_sync(sdk::Apps& apps, const std::string& url, bool as_json) {
    const sdk::Apps::Outcome o = apps.sync(url);
    if (as_json) {
        std::cout << o.body.dump(2) << '\n';
    } else if (o.status == 200) {
        const std::string id = o.body.value("app_id", "");
        if (id.empty()) {
            std::cout << fmt::format("synced {} (the app registered itself: {})\n", url,
                                     o.body.value("message", ""));
        } else {
            const auto app = apps.find(id);
            std::cout << fmt::format("synced app {} from {}: {} functions{}\n", id, url,
                                     app ? app->functions.size() : 0,
                                     o.body.value("modified", false) ? "" : " (unchanged)");
        }
        for (const json& w : o.body.value("warnings", json::array()))
            std::cerr << "warning: " << w.get<std::string>() << '\n';
    } else {
        std::cerr << "cairn: error: " << o.body.value("error", std::string("the sync failed"))
                  << '\n';
    }
    if (o.status == 200) return kExitOk;
    return o.status == 400 ? kExitUsage : kExitFailed;
}

int apps_list(sdk::Apps& apps, bool as_json) {
    const auto list = apps.list();
    if (as_json) {
        json out = json::array();
        for (const auto& a : list) {
            out.push_back({{"id", a.id},
                           {"url", a.url},
                           {"sdk", a.sdk},
                           {"functions", a.functions},
                           {"warnings", a.warnings},
                           {"synced_at", a.synced_at}});
        }
        std::cout << out.dump(2) << '\n';
        return kExitOk;
    }
    std::cout << fmt::format("{:<24} {:>9}  {:<16} {:<24}  {}\n", "APP", "FUNCTIONS", "SDK",
                             "SYNCED AT", "URL");
    for (const auto& a : list) {
        std::cout << fmt::format("{:<24} {:>9}  {:<16} {:<24}  {}\n", a.id, a.functions.size(),
                                 a.sdk.empty() ? "-" : a.sdk, format_rfc3339(a.synced_at), a.url);
        for (const auto& w : a.warnings) std::cout << "  warning: " << w << '\n';
    }
    return kExitOk;
}

int apps_remove(sdk::Apps& apps, const std::string& id, bool as_json) {
    const bool removed = apps.remove(id);
    if (as_json) {
        std::cout << json{{"id", id}, {"removed", removed}}.dump(2) << '\n';
    } else if (removed) {
        std::cout << fmt::format(
            "removed app {}: its functions start no runs, and its runs not "
            "yet ended fail\n",
            id);
    } else {
        std::cerr << fmt::format("cairn: error: no app '{}'\n", id);
    }
    return removed ? kExitOk : kExitFailed;
}

}  // namespace cairn::cli
