// The ticket plugin's HTTP routes under /api/v1 (docs/tickets.md). Each handler parses,
// authenticates, calls a service and formats; errors become HTTP in respond() alone.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <deque>
#include <mutex>

#include "common/json.hpp"
#include "common/slots.hpp"
#include "engine/engine.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "server/http/router.hpp"

namespace cairn::ticket {
namespace {

using server::Params;
using server::Reply;
using server::Request;
using server::Response;

Reply json_response(int status, const json& body) {
    Reply r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    return r;
}

Reply no_content() {
    Reply r;
    r.status = 204;
    r.content_type = "application/json";
    return r;
}

Reply error(const ApiError& e) {
    Reply r = server::error_response(http_status(e.code()), to_string(e.code()), e.what(),
                                     e.details().dump());
    if (e.code() == ErrorCode::rate_limited || e.code() == ErrorCode::unavailable)
        r.headers.emplace_back("Retry-After", std::to_string(std::max(1, e.retry_after_s())));
    if (e.code() == ErrorCode::unauthorized) r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
}

// Runs a handler body, mapping ApiError to its status; anything else propagates to the
// server, which answers a generic 500 and logs the text.
template <class Fn>
auto respond(Fn&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const ApiError& e) {
        return error(e);
    }
}

// Runs `fn`, a handler body that hashes or checks a password, on the password pool and
// answers later; at once when no server stands behind the request. A full pool is a 503.
// `fn` outlives the handler: it captures what it needs by value.
template <class Fn>
Response on_password_pool(Services& s, const Request& req, Fn fn) {
    auto later = req.later();
    if (!later) return respond(fn);
    const bool queued = s.passwords.submit([later, fn = std::move(fn)]() mutable {
        try {
            later->answer(respond(fn));
        } catch (const std::exception& e) {  // unanswered, the request gets a 500
            spdlog::error("a password request failed: {}", e.what());
        }
    });
    if (!queued)
        return error(ApiError(ErrorCode::unavailable,
                              "too many password checks are waiting; try again shortly",
                              json::array(), 1));
    return Response::deferred(std::move(later));
}

json body_of(const Request& req) {
    if (req.body.empty()) return json::object();
    std::string problem;
    json j = parse_untrusted_json(req.body, problem);
    if (j.is_discarded()) throw ApiError(ErrorCode::invalid_json, "the request body: " + problem);
    if (!j.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    return j;
}

int int_param(const Request& req, const char* name, int fallback, int min, int max, Problems& p) {
    const auto text = req.query(name);
    if (!text) return fallback;
    int n = 0;
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
    if (ec != std::errc{} || end != text->data() + text->size() || n < min || n > max) {
        p.add(name, fmt::format("must be a whole number from {} to {}", min, max));
        return fallback;
    }
    return n;
}

// Rows a page may start after: an OFFSET makes the database read and drop every row
// before it, so deep pages cost the server what a client asks for free.
constexpr int kMaxOffset = 10'000;

// `page` and `limit` as a listing reads them: page 1–1,000,000 (default 1), limit 1–100
// (default 20), and the page starting at most kMaxOffset rows in.
std::pair<int, int> page_params(const Request& req, Problems& p) {
    const int page = int_param(req, "page", 1, 1, 1'000'000, p);
    const int limit = int_param(req, "limit", 20, 1, 100, p);
    if (static_cast<long long>(page - 1) * limit > kMaxOffset)
        p.add("page", fmt::format("starts past row {}: narrow the filters instead", kMaxOffset));
    return {page, limit};
}

void require_admin(const Principal& who) {
    if (who.role != Role::admin) throw ApiError(ErrorCode::forbidden, "admins only");
}

json page_json(const char* key, json items, int page, int limit, std::int64_t total) {
    return {{key, std::move(items)}, {"page", page}, {"limit", limit}, {"total", total}};
}

TicketQuery ticket_query(const Request& req) {
    Problems p;
    TicketQuery q;
    if (auto s = req.query("status")) {
        if (!is_status(*s)) p.add("status", "must be open, in_progress, resolved or closed");
        q.status = *s;
    }
    if (auto s = req.query("priority")) {
        if (!is_priority(*s) && *s != "unset")
            p.add("priority", "must be low, medium, high or unset");
        q.priority = *s;
    }
    if (auto s = req.query("tag")) {
        std::string tag = trim(*s);
        if (tag.starts_with('#')) tag.erase(0, 1);
        for (char& c : tag) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (tag.empty() || tag.find('"') != std::string::npos) p.add("tag", "is not a valid tag");
        q.tag = tag;
    }
    if (auto s = req.query("q"); s && !trim(*s).empty()) q.search = trim(*s);
    if (auto s = req.query("assigned_to_me")) q.assigned_to_me = *s == "true" || *s == "1";
    if (auto s = req.query("assigned_to")) {
        if (*s == "me")
            q.assigned_to_me = true;
        else
            q.assigned_to = *s;
    }
    if (auto s = req.query("sort")) {
        std::string_view f = *s;
        if (f.starts_with('-')) f.remove_prefix(1);
        static constexpr std::string_view kSorts[] = {"created_at", "updated_at", "priority",
                                                      "deadline",   "status",     "title"};
        if (std::find(std::begin(kSorts), std::end(kSorts), f) == std::end(kSorts))
            p.add("sort",
                  "must be created_at, updated_at, priority, deadline, status or title, "
                  "with '-' for descending");
        else
            q.sort = *s;
    }
    std::tie(q.page, q.limit) = page_params(req, p);
    p.check("invalid query parameters");
    return q;
}

// Replies to a client's messages waiting to go out; a client that sends more without
// reading is closed.
constexpr std::size_t kMaxReplies = 256;

// One WebSocket connection's state: its place in the feed and messages waiting to go out.
struct Socket {
    Slots::Hold slot;  // one of the user's CAIRN_WS_PER_USER
    Principal who;
    std::string token;
    std::uint64_t cursor = 0;
    std::int64_t checked_at = 0;
    std::atomic<bool> closing = false;
    std::mutex mutex;                 // guards `outbox` and `replies` (on_message runs beside next)
    std::deque<std::string> outbox;   // hello, feed changes, notices
    std::deque<std::string> replies;  // answers to the client's messages, at most kMaxReplies
};

// The next message to send, replies first; nullopt when none waits. `sock.mutex` held.
std::optional<std::string> pop_message(Socket& sock) {
    for (auto* q : {&sock.replies, &sock.outbox}) {
        if (q->empty()) continue;
        std::string m = std::move(q->front());
        q->pop_front();
        return m;
    }
    return std::nullopt;
}

Response websocket(Services& s, const Request& req) {
    std::string token = req.header("authorization");
    if (token.empty()) token = req.query("token").value_or("");
    const Principal who = s.auth.authenticate(token);
    if (!req.websocket_upgrade)
        return server::error_response(426, "upgrade_required",
                                      "this route speaks WebSocket: send an Upgrade request");
    auto sock = std::make_shared<Socket>();
    sock->slot = s.websockets.acquire(who.user_id);
    if (!sock->slot)
        return error(ApiError(ErrorCode::rate_limited,
                              fmt::format("at most {} live connections per user; close one first",
                                          s.websockets.limit()),
                              json::array(), 5));
    sock->who = who;
    sock->token = token;
    sock->cursor = s.feed.head();
    sock->checked_at = s.engine.clock().now_ms();
    sock->outbox.push_back(
        json{{"type", "hello"}, {"user_id", who.user_id}, {"role", to_string(who.role)}}.dump());
    server::WebSocket r;
    r.on_message = [sock](const std::string& text) {
        std::string problem;
        const json j = parse_untrusted_json(text, problem);
        std::lock_guard lock(sock->mutex);
        if (sock->closing) return;
        if (sock->replies.size() >= kMaxReplies) {
            // It sends without reading: what waits is dropped, and the connection ends.
            sock->replies.clear();
            sock->outbox.clear();
            sock->outbox.push_back(json{{"type", "error"},
                                        {"code", "slow_consumer"},
                                        {"message", "too many messages unread; closing"}}
                                       .dump());
            sock->closing = true;
        } else if (j.is_discarded()) {
            sock->replies.push_back(
                json{{"type", "error"}, {"code", "invalid_json"}, {"message", problem}}.dump());
        } else if (j.is_object() && j.value("type", "") == "ping") {
            sock->replies.push_back(json{{"type", "pong"}}.dump());
        }
    };
    r.next = [&s, sock]() -> std::optional<std::string> {
        {
            std::lock_guard lock(sock->mutex);
            if (auto m = pop_message(*sock)) return m;
        }
        if (sock->closing) return std::nullopt;
        // Re-check the token now and then: deactivation or logout ends the feed.
        const std::int64_t now = s.engine.clock().now_ms();
        if (now - sock->checked_at >= 5000) {
            sock->checked_at = now;
            try {
                Principal now_who = s.auth.authenticate(sock->token);
                if (now_who.role != sock->who.role) {  // the feed shows what the new role sees
                    std::lock_guard lock(sock->mutex);
                    sock->outbox.push_back(
                        json{{"type", "role_changed"}, {"role", to_string(now_who.role)}}.dump());
                }
                sock->who = std::move(now_who);
            } catch (const ApiError& e) {
                if (e.code() == ErrorCode::rate_limited) return std::string();  // next time
                sock->closing = true;
                return json{{"type", "error"}, {"code", "unauthorized"}, {"message", e.what()}}
                    .dump();
            }
        }
        std::lock_guard lock(sock->mutex);
        for (auto& c : s.feed.since(sock->cursor)) {
            sock->cursor = c.seq;
            if (sock->who.staff() || c.owner_id == sock->who.user_id)
                sock->outbox.push_back(c.message.dump());
        }
        return pop_message(*sock).value_or(std::string());
    };
    return r;
}

// Register, log in, refresh, log out, passwords, and the caller's own profile.
void add_auth_routes(server::Router& router, Services& s) {
    using server::Auth;
    auto authed = [&s](const Request& req) {
        return s.auth.authenticate(req.header("authorization"));
    };
    router.add(
        "POST", "/api/v1/auth/register", Auth::none, [&s](const Request& req, const Params&) {
            return respond([&] {
                return on_password_pool(s, req, [&s, body = body_of(req), client = req.client] {
                    return json_response(201, s.auth.register_user(body, client).to_json());
                });
            });
        });
    router.add("POST", "/api/v1/auth/login", Auth::none, [&s](const Request& req, const Params&) {
        return respond([&] {
            return on_password_pool(s, req, [&s, body = body_of(req), client = req.client] {
                return json_response(200, s.auth.login(body, client).to_json());
            });
        });
    });
    router.add("POST", "/api/v1/auth/refresh", Auth::none, [&s](const Request& req, const Params&) {
        return respond([&] { return json_response(200, s.auth.refresh(body_of(req)).to_json()); });
    });
    router.add("POST", "/api/v1/auth/logout", Auth::none,
               [&s, authed](const Request& req, const Params&) {
                   return respond([&] {
                       s.auth.logout(authed(req));
                       return no_content();
                   });
               });
    auto change_password = [&s, authed](const Request& req, const Params&) {
        return respond([&] {
            return on_password_pool(
                s, req, [&s, who = authed(req), body = body_of(req), client = req.client] {
                    s.auth.change_password(who, body, client);
                    return no_content();
                });
        });
    };
    router.add("POST", "/api/v1/auth/change-password", Auth::none, change_password);
    router.add("PUT", "/api/v1/users/me/password", Auth::none, change_password);

    // ---- the caller's profile ----
    auto get_me = [&s, authed](const Request& req, const Params&) {
        return respond(
            [&] { return json_response(200, to_json(s.users.get(authed(req).user_id))); });
    };
    auto patch_me = [&s, authed](const Request& req, const Params&) {
        return respond([&] {
            return json_response(200, to_json(s.users.update_me(authed(req), body_of(req))));
        });
    };
    for (const char* path : {"/api/v1/users/me", "/api/v1/auth/me"}) {
        router.add("GET", path, Auth::none, get_me);
        router.add("PATCH", path, Auth::none, patch_me);
    }
}

// Admin: users, their roles, skills and state.
void add_user_routes(server::Router& router, Services& s) {
    using server::Auth;
    auto authed = [&s](const Request& req) {
        return s.auth.authenticate(req.header("authorization"));
    };
    router.add("GET", "/api/v1/users", Auth::none, [&s, authed](const Request& req, const Params&) {
        return respond([&] {
            require_admin(authed(req));
            Problems p;
            UserQuery q;
            if (auto role = req.query("role")) {
                q.role = parse_role(*role);
                if (!q.role) p.add("role", "must be user, moderator or admin");
            }
            if (auto active = req.query("active")) {
                if (*active != "true" && *active != "false")
                    p.add("active", "must be true or false");
                q.active = *active == "true";
            }
            if (auto search = req.query("q"); search && !trim(*search).empty())
                q.search = trim(*search);
            std::tie(q.page, q.limit) = page_params(req, p);
            p.check("invalid query parameters");
            const auto page = s.users.list(q);
            json items = json::array();
            for (const auto& u : page.users) items.push_back(to_json(u));
            return json_response(200,
                                 page_json("users", std::move(items), q.page, q.limit, page.total));
        });
    });
    router.add("GET", "/api/v1/users/{id}", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       require_admin(authed(req));
                       return json_response(200, to_json(s.users.get(p.at("id"))));
                   });
               });
    router.add("PATCH", "/api/v1/users/{id}", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       const auto who = authed(req);
                       require_admin(who);
                       return json_response(200, to_json(s.users.update(p.at("id"), body_of(req))));
                   });
               });
    for (const bool active : {false, true}) {
        router.add(
            "POST", active ? "/api/v1/users/{id}/reactivate" : "/api/v1/users/{id}/deactivate",
            Auth::none, [&s, authed, active](const Request& req, const Params& p) {
                return respond([&] {
                    const auto who = authed(req);
                    require_admin(who);
                    return json_response(200, to_json(s.users.set_active(p.at("id"), active)));
                });
            });
    }
    router.add("DELETE", "/api/v1/users/{id}", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       const auto who = authed(req);
                       require_admin(who);
                       s.users.remove(who, p.at("id"));
                       return no_content();
                   });
               });
}

// POST /api/v1/tickets.
void add_ticket_post_route(server::Router& router, Services& s) {
    using server::Auth;
    // The session check rides in the ticket's own write (TicketPosts): one database read
    // less. A request refused for its body or by that check first gets authenticate()'s
    // answer, so a revoked session still learns 401 with its reason, never 400.
    //
    // Answered later (server::Later) where the server allows: the handler's thread is
    // not held while the posts made at once are written together.
    router.add("POST", "/api/v1/tickets", Auth::none, [&s](const Request& req, const Params&) {
        // The answer for a ticket `make` returns, or for what it throws.
        auto answer = [&s, authorization = req.header("authorization")](const auto& make) {
            return respond([&] {
                try {
                    return json_response(201, to_json(make()));
                } catch (const ApiError&) {
                    s.auth.authenticate(authorization);  // throws the reason, if there is one
                    throw;
                }
            });
        };
        return respond([&]() -> Response {
            const auto token = s.auth.verify_token(req.header("authorization"));
            Principal who;
            who.user_id = token.user_id;
            who.session_id = token.session_id;
            auto later = req.later();
            if (!later) return answer([&] { return s.tickets.create(who, body_of(req)); });
            try {
                // A ticket is answered by the thread that wrote it: a hop to the handler
                // pool cost more in wake-ups than the formatting. A refusal goes to the
                // pool, since authenticate() reads the database.
                s.tickets.create(who, body_of(req), [later, answer](TicketService::Created c) {
                    if (c.ticket) return later->answer(json_response(201, to_json(*c.ticket)));
                    later->then([answer, error = c.error] {
                        return answer([&error]() -> Ticket { std::rethrow_exception(error); });
                    });
                });
            } catch (...) {
                return answer([error = std::current_exception()]() -> Ticket {
                    std::rethrow_exception(error);
                });
            }
            return Response::deferred(std::move(later));
        });
    });
}

// Listing, reading, editing, assigning and replying to tickets, and the live feed.
void add_ticket_work_routes(server::Router& router, Services& s) {
    using server::Auth;
    auto authed = [&s](const Request& req) {
        return s.auth.authenticate(req.header("authorization"));
    };
    router.add(
        "GET", "/api/v1/tickets", Auth::none, [&s, authed](const Request& req, const Params&) {
            return respond([&] {
                const auto who = authed(req);
                const auto q = ticket_query(req);
                const auto page = s.tickets.list(who, q);
                json items = json::array();
                for (const auto& t : page.tickets) items.push_back(to_json(t));
                return json_response(
                    200, page_json("tickets", std::move(items), q.page, q.limit, page.total));
            });
        });
    router.add(
        "GET", "/api/v1/tickets/summary", Auth::none,
        [&s, authed](const Request& req, const Params&) {
            return respond([&] { return json_response(200, s.tickets.summary(authed(req))); });
        });
    router.add("GET", "/api/v1/tickets/{id}", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       const auto who = authed(req);
                       json t = to_json(s.tickets.get(who, p.at("id")));
                       json replies = json::array();
                       for (const auto& r : s.tickets.replies(who, p.at("id")))
                           replies.push_back(to_json(r));
                       t["replies"] = std::move(replies);
                       return json_response(200, t);
                   });
               });
    router.add("PATCH", "/api/v1/tickets/{id}", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       const auto who = authed(req);
                       return json_response(
                           200, to_json(s.tickets.update(who, p.at("id"), body_of(req))));
                   });
               });
    router.add("DELETE", "/api/v1/tickets/{id}", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       s.tickets.remove(authed(req), p.at("id"));
                       return no_content();
                   });
               });
    // Status and priority alone (staff), for clients that prefer one route per action.
    for (const char* field : {"status", "priority"}) {
        router.add(
            "PATCH", fmt::format("/api/v1/tickets/{{id}}/{}", field), Auth::none,
            [&s, authed, field](const Request& req, const Params& p) {
                return respond([&] {
                    const auto who = authed(req);
                    const json body = body_of(req);
                    if (!body.contains(field))
                        throw ApiError(
                            ErrorCode::validation_failed, fmt::format("{} is required", field),
                            json::array({{{"field", field}, {"message", "is required"}}}));
                    return json_response(200, to_json(s.tickets.update(
                                                  who, p.at("id"), json{{field, body[field]}})));
                });
            });
    }
    router.add("POST", "/api/v1/tickets/{id}/assign", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       const auto who = authed(req);
                       return json_response(
                           200, to_json(s.tickets.assign(who, p.at("id"), body_of(req))));
                   });
               });
    auto unassign = [&s, authed](const Request& req, const Params& p) {
        return respond([&] {
            return json_response(200, to_json(s.tickets.unassign(authed(req), p.at("id"))));
        });
    };
    router.add("DELETE", "/api/v1/tickets/{id}/assign", Auth::none, unassign);
    router.add("POST", "/api/v1/tickets/{id}/unassign", Auth::none, unassign);
    router.add("GET", "/api/v1/tickets/{id}/replies", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       json items = json::array();
                       for (const auto& r : s.tickets.replies(authed(req), p.at("id")))
                           items.push_back(to_json(r));
                       return json_response(200, json{{"replies", std::move(items)}});
                   });
               });
    router.add("POST", "/api/v1/tickets/{id}/replies", Auth::none,
               [&s, authed](const Request& req, const Params& p) {
                   return respond([&] {
                       const auto who = authed(req);
                       return json_response(
                           201, to_json(s.tickets.add_reply(who, p.at("id"), body_of(req))));
                   });
               });

    // ---- live updates ----
    router.add("GET", "/api/v1/ws", Auth::none, [&s](const Request& req, const Params&) {
        return respond([&] { return websocket(s, req); });
    });
}

}  // namespace

void add_ticket_routes(server::Router& router, Services& s) {
    add_auth_routes(router, s);
    add_user_routes(router, s);
    add_ticket_post_route(router, s);
    add_ticket_work_routes(router, s);
}

}  // namespace cairn::ticket
