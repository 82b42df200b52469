#pragma once

// Internal to library/: what the public Database and Engine hold.

#include <memory>
#include <string>

#include "cairn/engine.hpp"
#include "engine/clock.hpp"
#include "engine/database_clock.hpp"
#include "engine/engine.hpp"
#include "storage/database.hpp"

namespace cairn {

struct Database::Impl {
    std::unique_ptr<storage::Database> db;
    engine::SystemClock local_clock;
    std::unique_ptr<engine::DatabaseClock> clock;  // the database's, on Postgres
};

struct Engine::Impl {
    Database::Impl& db;
    std::string name;
    engine::Engine engine;
};

}  // namespace cairn
