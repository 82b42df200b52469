#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/request.hpp"
#include "server/http/response.hpp"

namespace cairn::server {

// Path parameters by name, e.g. {"id": "0190..."} for /api/engine/runs/{id}.
using Params = std::map<std::string, std::string, std::less<>>;

// Who may call a route: anyone, a key of any scope (events and admin), or admin keys.
enum class Auth { none, events, admin };

// Matches method and path to a route, checks the route's key, and calls it: the one place
// where a request finds its handler. Unknown paths are 404, known paths with another
// method 405, a missing or unknown key 401, a key without the scope 403.
//
// Routes are added before the first dispatch; dispatch is thread-safe after that.
class Router {
  public:
    using Fn = std::function<Response(const Request&, const Params&)>;
    // The scope of a valid bearer key (Auth::events or Auth::admin); nullopt otherwise.
    using KeyScope = std::function<std::optional<Auth>(std::string_view key)>;
    // Told of each request once its answer's status is known (for a deferred answer, when
    // it is given): the route's pattern ("unmatched" for none), the method, the status
    // and the seconds since dispatch began.
    using Observer = std::function<void(const std::string& route, const std::string& method,
                                        int status, double seconds)>;

    struct Route {
        std::string method;
        std::string pattern;  // segments in braces are parameters: /api/engine/runs/{id}
        Auth auth;
        Fn fn;
        std::vector<std::string> segments = {};  // the pattern's, split once by add()
        bool trailing_slash = false;
    };

    explicit Router(KeyScope keys = {}, Observer observe = {})
        : keys_(std::move(keys)), observe_(std::move(observe)) {}
    void add(std::string method, std::string pattern, Auth auth, Fn fn);
    Response dispatch(const Request& request) const;
    const std::vector<Route>& routes() const { return routes_; }

  private:
    Response call(const Route& route, const Request& request, const Params& params) const;

    KeyScope keys_;
    Observer observe_;
    std::vector<Route> routes_;
};

}  // namespace cairn::server
