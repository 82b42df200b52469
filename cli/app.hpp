#pragma once

namespace cairn::cli {

// Exit codes of every `cairn` command (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // the operation ran and failed
inline constexpr int kExitUsage =
    2;  // bad arguments or configuration, database or port unavailable

// Parses argv, runs the chosen command and returns its exit code. Errors are reported
// as one line on stderr.
int run(int argc, char** argv);

}  // namespace cairn::cli
