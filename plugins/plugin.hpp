#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "storage/migrations.hpp"

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Engine;
class Clock;
}  // namespace cairn::engine
namespace cairn::server {
class Router;
}

namespace cairn::plugins {

// What a started plugin may use. The references outlive the plugin's started state.
struct PluginContext {
    storage::Database& db;
    engine::Engine& engine;
};

// A plugin contributes schema, workflows and HTTP routes; the server and the engine know
// nothing else about it (docs/plugins.md). The `cairn` binary calls, in this order:
//
//   components()          before migrating, for every process that opens the database
//   start(ctx)            after migrating: read configuration, build services; may throw
//                         std::runtime_error with a message for the operator
//   register_workflows()  before the engine starts or sends anything
//   add_routes()          `cairn serve` only, before the server accepts connections
//
// Not thread-safe during these calls; after them, routes and workflows may run on any
// thread, so a plugin's services must be thread-safe.
class Plugin {
  public:
    virtual ~Plugin() = default;
    virtual std::string_view name() const = 0;
    // Migrations, as components in dependency order (each with its own version line).
    virtual std::vector<storage::Component> components() const { return {}; }
    virtual void start(const PluginContext& /*ctx*/) {}
    virtual void register_workflows(engine::Engine& /*engine*/) {}
    virtual void add_routes(server::Router& /*router*/) {}
};

}  // namespace cairn::plugins
