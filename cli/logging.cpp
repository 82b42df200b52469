#include "cli/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "sdk/signing.hpp"

namespace cairn::cli {

namespace {

// The process log on stderr, with signing keys ("signkey-<env>-<hex>") redacted from
// every line, whoever wrote it.
class RedactingSink final : public spdlog::sinks::stderr_color_sink_mt {
    using Base = spdlog::sinks::stderr_color_sink_mt;

  protected:
    void log(const spdlog::details::log_msg& msg) override {
        const std::string_view text(msg.payload.data(), msg.payload.size());
        if (text.find("signkey-") == std::string_view::npos) return Base::log(msg);
        const std::string clean = sdk::redact_signing_keys(text);
        spdlog::details::log_msg copy(msg);
        copy.payload = clean;
        Base::log(copy);
    }
};

}  // namespace

void setup_logging() {
    auto logger = std::make_shared<spdlog::logger>("cairn", std::make_shared<RedactingSink>());
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    // Read once at start-up, before any thread exists.
    const char* level = std::getenv("CAIRN_LOG_LEVEL");  // NOLINT(concurrency-mt-unsafe)
    spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
}

}  // namespace cairn::cli
