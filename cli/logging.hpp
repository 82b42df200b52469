#pragma once

namespace cairn::cli {

// The process log on stderr (CAIRN_LOG_LEVEL, default info), with signing keys redacted
// from every line. Call once, before any thread starts.
void setup_logging();

}  // namespace cairn::cli
