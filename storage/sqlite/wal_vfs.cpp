// One write per commit to a SQLite WAL file (wal_vfs.hpp).
//
// A commit appends its frames to the WAL, each frame written by SQLite as its 24-byte
// header and then its page, and only then publishes the commit in the shared-memory index,
// where other connections look for it. Until that moment no other connection reads the new
// frames, so they may sit in memory as long as they reach the file before the commit
// frame's write returns: the file then holds exactly what SQLite would have written. What
// the WAL file looks like is SQLite's file format (https://sqlite.org/fileformat2.html):
// frame headers are 24 bytes, and a commit frame's header carries the database size after
// the commit in its bytes 4-7, which is zero in every other frame's.
//
// The rules, per WAL file handle:
// - A 24-byte write right after this handle's previous write is a frame header appended;
//   the write right after it, its page. Both go to the buffer. Anything else (the WAL
//   header, a page rewritten in place, a checksum rewritten) first writes the buffer out,
//   then goes straight to the file, as does every other call on the handle (read, sync,
//   size, truncate, file control), so what the handle reads is what it wrote.
// - When a commit frame's page is in, the buffer is written out before the call returns,
//   and a failure is that write's failure: the commit fails as it would have.
// - A transaction that wrote frames (a spill of a large transaction) and then rolled back
//   leaves them in the buffer; they are dropped when the connection releases the WAL's
//   write lock, since the next writer, perhaps on another connection, writes its frames
//   at the same offsets; closing the file drops them too. To see that release, the
//   database file is wrapped as well, and each WAL file is paired with the database file
//   of its connection. A WAL file left unpaired writes everything straight through.
//
// What this leans on beyond the file format: that SQLite appends a frame as two writes, its
// header and then its page, and that a WAL file's name leads back to its database file's. Were
// either to change in another SQLite version, nothing would be buffered and every write would go
// straight through.
#include "storage/sqlite/wal_vfs.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <new>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace cairn::storage::sqlite {
namespace {

constexpr int kFrameHeaderBytes = 24;
constexpr int kWalWriteLock = 0;               // the write lock's slot in the shm locks
constexpr std::size_t kBufferLimit = 1 << 20;  // written out beyond this, commit or not
// The most one write to the default VFS may carry: SQLite's unix VFS writes at most 128 KiB
// less one byte per system call, and reports a larger write whose size is a multiple of
// 128 KiB as a full disk. So the buffer goes out in pieces of 31 pages.
constexpr std::size_t kWriteLimit = 31 * 4096;

sqlite3_vfs* g_base = nullptr;  // the default VFS, which does the work
std::atomic<std::uint64_t> g_frames{0};
std::atomic<std::uint64_t> g_writes{0};

struct DbFile;

struct WalFile {
    sqlite3_file base;            // first: SQLite holds a pointer to it
    sqlite3_file* real;           // the default VFS's file, just after this struct
    DbFile* db = nullptr;         // its connection's database file; none: nothing buffered
    std::vector<char> buffer;     // frames appended, not yet written
    sqlite3_int64 buffer_at = 0;  // the file offset of buffer[0]
    sqlite3_int64 next = -1;      // the offset just past this handle's last write
    bool page_due = false;        // the buffer ends with a frame header: its page is next
    bool commit_due = false;      // ... and that header is a commit frame's
};

struct DbFile {
    sqlite3_file base;
    sqlite3_file* real;
    const char* name = nullptr;  // as SQLite passed it to xOpen: the key that pairs its WAL
    WalFile* wal = nullptr;
};

// SQLite hands each method the sqlite3_file it gave xOpen room for: the struct's start.
static_assert(std::is_standard_layout_v<WalFile> && offsetof(WalFile, base) == 0);
static_assert(std::is_standard_layout_v<DbFile> && offsetof(DbFile, base) == 0);

// Database files by the name pointer SQLite opened them with. A WAL file's name leads back
// to that same pointer through sqlite3_filename_database, so a connection's two files pair
// up even when several connections have the same database open.
std::mutex g_mu;
std::unordered_map<const char*, DbFile*>& open_dbs() {
    static auto* dbs = new std::unordered_map<const char*, DbFile*>;  // outlives every file
    return *dbs;
}

template <class File>
File* as(sqlite3_file* f) {
    return reinterpret_cast<File*>(f);
}

const sqlite3_io_methods& real_methods(sqlite3_file* real) {
    return *real->pMethods;
}

// ---- WAL files ----------------------------------------------------------------------------

void drop_buffer(WalFile* w) {
    w->buffer.clear();
    w->page_due = w->commit_due = false;
}

int write_out(WalFile* w) {
    int rc = SQLITE_OK;
    for (std::size_t done = 0; done < w->buffer.size() && rc == SQLITE_OK;) {
        const std::size_t n = std::min(w->buffer.size() - done, kWriteLimit);
        rc = real_methods(w->real).xWrite(w->real, w->buffer.data() + done, static_cast<int>(n),
                                          w->buffer_at + static_cast<sqlite3_int64>(done));
        g_writes.fetch_add(1, std::memory_order_relaxed);
        done += n;
    }
    drop_buffer(w);
    return rc;
}

bool is_commit_header(const void* data) {
    const auto* b = static_cast<const unsigned char*>(data);
    return (b[4] | b[5] | b[6] | b[7]) != 0;  // database size after the commit, big-endian
}

int wal_write(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
    WalFile* w = as<WalFile>(f);
    const bool appends = offset == w->next && w->db != nullptr;
    const bool header = appends && !w->page_due && amount == kFrameHeaderBytes;
    const bool page = appends && w->page_due;
    w->next = offset + amount;
    if (!header && !page) {
        if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
        return real_methods(w->real).xWrite(w->real, data, amount, offset);
    }
    if (w->buffer.empty()) w->buffer_at = offset;
    const auto* bytes = static_cast<const char*>(data);
    w->buffer.insert(w->buffer.end(), bytes, bytes + amount);
    if (header) {
        w->page_due = true;
        w->commit_due = is_commit_header(data);
        return SQLITE_OK;
    }
    w->page_due = false;
    g_frames.fetch_add(1, std::memory_order_relaxed);
    if (w->commit_due || w->buffer.size() >= kBufferLimit) return write_out(w);
    return SQLITE_OK;
}

int wal_close(sqlite3_file* f) {
    WalFile* w = as<WalFile>(f);
    // Frames still here belong to no commit (a commit writes its own out).
    drop_buffer(w);
    {
        std::lock_guard lock(g_mu);
        if (w->db != nullptr) w->db->wal = nullptr;
    }
    const int rc = real_methods(w->real).xClose(w->real);
    w->~WalFile();
    return rc;
}

// ---- forwarded as they are ------------------------------------------------------------------

// The default VFS's method `Method` on the file inside `f`; its parameters are taken from
// the slot of sqlite3_io_methods the function is put in.
template <class File, auto Method, class R, class... Args>
R forward(sqlite3_file* f, Args... args) {
    sqlite3_file* r = as<File>(f)->real;
    return (r->pMethods->*Method)(r, args...);
}

// The same for a WAL file, once what its buffer holds is in the file.
template <auto Method, class... Args>
int after_write_out(sqlite3_file* f, Args... args) {
    WalFile* w = as<WalFile>(f);
    if (const int rc = write_out(w); rc != SQLITE_OK) return rc;
    return (w->real->pMethods->*Method)(w->real, args...);
}

// ---- database files: everything forwarded; the write lock's release drops a WAL buffer ----

int db_close(sqlite3_file* f) {
    DbFile* d = as<DbFile>(f);
    {
        std::lock_guard lock(g_mu);
        if (d->name != nullptr) {
            auto& dbs = open_dbs();
            if (const auto it = dbs.find(d->name); it != dbs.end() && it->second == d)
                dbs.erase(it);
        }
        if (d->wal != nullptr) d->wal->db = nullptr;
    }
    const int rc = real_methods(d->real).xClose(d->real);
    d->~DbFile();
    return rc;
}
int db_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
    DbFile* d = as<DbFile>(f);
    if (d->wal != nullptr && flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE) &&
        offset <= kWalWriteLock && kWalWriteLock < offset + n) {
        drop_buffer(d->wal);  // empty after a commit; a rolled-back spill's frames otherwise
    }
    return real_methods(d->real).xShmLock(d->real, offset, n, flags);
}

using M = sqlite3_io_methods;

constexpr M kWalMethods = {
    1,
    wal_close,
    after_write_out<&M::xRead>,
    wal_write,
    after_write_out<&M::xTruncate>,
    after_write_out<&M::xSync>,
    after_write_out<&M::xFileSize>,
    forward<WalFile, &M::xLock>,
    forward<WalFile, &M::xUnlock>,
    forward<WalFile, &M::xCheckReservedLock>,
    after_write_out<&M::xFileControl>,
    forward<WalFile, &M::xSectorSize>,
    forward<WalFile, &M::xDeviceCharacteristics>,
    nullptr,  // version 1: SQLite asks a WAL file for no shared memory or mapping
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

constexpr M kDbMethods = {
    3,
    db_close,
    forward<DbFile, &M::xRead>,
    forward<DbFile, &M::xWrite>,
    forward<DbFile, &M::xTruncate>,
    forward<DbFile, &M::xSync>,
    forward<DbFile, &M::xFileSize>,
    forward<DbFile, &M::xLock>,
    forward<DbFile, &M::xUnlock>,
    forward<DbFile, &M::xCheckReservedLock>,
    forward<DbFile, &M::xFileControl>,
    forward<DbFile, &M::xSectorSize>,
    forward<DbFile, &M::xDeviceCharacteristics>,
    forward<DbFile, &M::xShmMap>,
    db_shm_lock,
    forward<DbFile, &M::xShmBarrier>,
    forward<DbFile, &M::xShmUnmap>,
    forward<DbFile, &M::xFetch>,
    forward<DbFile, &M::xUnfetch>,
};

// ---- the VFS --------------------------------------------------------------------------------

constexpr std::size_t kHeadBytes = (std::max(sizeof(WalFile), sizeof(DbFile)) + 15) / 16 * 16;

int vfs_open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
    const bool main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0 && name != nullptr;
    const bool wal = (flags & SQLITE_OPEN_WAL) != 0 && name != nullptr;
    auto* real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kHeadBytes);
    // Any other file (journals, temporary files) is the default VFS's own, unwrapped: SQLite
    // gave room for the head and the file, so the file fits at the start.
    if (!main_db && !wal) return g_base->xOpen(g_base, name, file, flags, out_flags);
    const int rc = g_base->xOpen(g_base, name, real, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (real->pMethods != nullptr) real->pMethods->xClose(real);
        file->pMethods = nullptr;  // nothing for SQLite to close
        return rc;
    }
    std::lock_guard lock(g_mu);
    if (main_db) {
        auto* d = new (file) DbFile{{&kDbMethods}, real};
        d->name = name;
        open_dbs()[name] = d;
    } else {
        auto* w = new (file) WalFile{{&kWalMethods}, real};
        const auto it = open_dbs().find(sqlite3_filename_database(name));
        if (it != open_dbs().end() && it->second->wal == nullptr) {
            w->db = it->second;
            it->second->wal = w;
        }
    }
    return SQLITE_OK;
}

// Everything but opening files is the default VFS's.
template <auto Method, class R, class... Args>
R base_vfs(sqlite3_vfs*, Args... args) {
    return (g_base->*Method)(g_base, args...);
}

}  // namespace

const char* wal_vfs_name() {
    static const char* const name = [] {
        static sqlite3_vfs vfs{};
        g_base = sqlite3_vfs_find(nullptr);
        vfs.iVersion = 2;
        vfs.szOsFile = static_cast<int>(kHeadBytes) + g_base->szOsFile;
        vfs.mxPathname = g_base->mxPathname;
        vfs.zName = "cairn-wal";
        vfs.xOpen = vfs_open;
        using V = sqlite3_vfs;
        vfs.xDelete = base_vfs<&V::xDelete>;
        vfs.xAccess = base_vfs<&V::xAccess>;
        vfs.xFullPathname = base_vfs<&V::xFullPathname>;
        vfs.xDlOpen = base_vfs<&V::xDlOpen>;
        vfs.xDlError = base_vfs<&V::xDlError>;
        vfs.xDlSym = base_vfs<&V::xDlSym>;
        vfs.xDlClose = base_vfs<&V::xDlClose>;
        vfs.xRandomness = base_vfs<&V::xRandomness>;
        vfs.xSleep = base_vfs<&V::xSleep>;
        vfs.xCurrentTime = base_vfs<&V::xCurrentTime>;
        vfs.xGetLastError = base_vfs<&V::xGetLastError>;
        vfs.xCurrentTimeInt64 = base_vfs<&V::xCurrentTimeInt64>;
        sqlite3_vfs_register(&vfs, 0);
        return vfs.zName;
    }();
    return name;
}

WalVfsCounts wal_vfs_counts() {
    return {g_frames.load(std::memory_order_relaxed), g_writes.load(std::memory_order_relaxed)};
}

}  // namespace cairn::storage::sqlite
