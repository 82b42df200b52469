#pragma once

#include <string>

namespace cairn::sdk {
class Apps;
}

namespace cairn::cli {

// `cairn apps sync URL`: asks the app for its functions and stores them (docs/sdk.md).
// Exit 1 when the app cannot be reached or refuses, 2 for a registration Cairn refuses.
int apps_sync(sdk::Apps& apps, const std::string& url, bool as_json);
int apps_list(sdk::Apps& apps, bool as_json);
// Exit 1 when there is no such app.
int apps_remove(sdk::Apps& apps, const std::string& id, bool as_json);

}  // namespace cairn::cli
