#pragma once

#include <cstdint>

// A SQLite VFS that is the default one but for how a commit reaches its WAL file. SQLite
// writes each frame of a commit as two pwrite calls (the 24-byte frame header, then the
// page), about 35 system calls for a batch of the engine's records; this VFS collects the
// frames a transaction appends and writes them with one call when the commit frame is
// complete, before SQLite publishes the commit to other connections. Everything else is
// the default VFS's. docs/storage.md ("One write per commit").
namespace cairn::storage::sqlite {

// The name to open connections with (sqlite3_open_v2's zVfs); registered on first call.
const char* wal_vfs_name();

// Totals for this process, for tests and benchmarks: frames that went to a WAL through the
// buffer, and the writes that carried them to the file.
struct WalVfsCounts {
    std::uint64_t frames = 0;
    std::uint64_t writes = 0;
};
WalVfsCounts wal_vfs_counts();

}  // namespace cairn::storage::sqlite
