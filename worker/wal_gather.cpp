// SQLite writes a WAL frame as two calls, its 24-byte header and then its
// page, so a commit of k pages costs 2k pwrite calls; on the machines
// harnessd runs on, each is worth several microseconds. This VFS gathers
// the appends of one write transaction and writes them at once when the
// commit frame's page arrives (docs/store.md, "Writing").
//
// Why it is safe, given how SQLite's WAL code (wal.c) works:
// - Frames are written only under the WAL's write lock, and they become
//   visible to readers only when the wal-index in shared memory is updated,
//   which happens after the commit frame is written. The commit frame's page
//   is where we write everything; the release of the write lock writes
//   whatever a rolled-back transaction left, so nothing gathered outlives the
//   lock, and another process can never have its frames overwritten by ours.
// - Only appends are gathered: a write that lands before the end of what
//   this transaction wrote (a frame rewritten in place, checksums written
//   again after a cache spill) writes what is gathered and then goes
//   straight through, so the order of writes to the file is SQLite's own.
// - A read, sync, truncate, size, file control or close of the WAL writes
//   what is gathered first, so SQLite never sees the file without it.
// - A failed write reports SQLite's own error on the call that writes the
//   gathered bytes: for a commit, the commit fails as it would have.
#include "worker/wal_gather.h"

#include <sqlite3.h>

#include <cstddef>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

namespace harnessd::worker {

namespace {

constexpr int kWalHeaderBytes = 32;
constexpr int kFrameHeaderBytes = 24;
// The most one write may carry: the default VFS writes at most 17 bits'
// worth of bytes per call (seekAndWriteFd masks the count), as SQLite's own
// writes never exceed a 64 KiB page and its header. Past this, what is
// gathered is written before the commit (a transaction of many pages).
constexpr std::size_t kMaxGathered = 0x1ffff;
// Room taken at a connection's first append, enough for a commit of 15
// pages: grown by doubling from nothing, the first commits would copy what
// they gathered into four ever larger blocks, each fresh memory.
constexpr std::size_t kFirstRoom = 64 * 1024;
// The write lock's slot among the WAL's shared-memory locks (wal.c).
constexpr int kWalWriteLock = 0;

sqlite3_vfs* g_base = nullptr;
sqlite3_vfs g_vfs;
// One table per version of the methods: a file's version is its real
// file's, so SQLite calls ours only where the real one has them.
sqlite3_io_methods g_methods[3];

struct GatherFile {
  sqlite3_file base;
  sqlite3_file* real;
  /// For a WAL file: the appends not yet written, from `at` on; else null.
  std::string* gathered;
  sqlite3_int64 at;
  /// The end of what this write transaction appended; a write before it is
  /// not an append.
  sqlite3_int64 end;
  /// The last frame header gathered was a commit frame's: its page ends
  /// the commit.
  bool commit_follows;
  /// For a database file: its open WAL, whose gathered frames the release
  /// of the write lock writes. For a WAL file: its database file.
  GatherFile* peer;
};

constexpr std::size_t kRealOffset =
    (sizeof(GatherFile) + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) * alignof(std::max_align_t);

GatherFile* as_gather(sqlite3_file* p) { return reinterpret_cast<GatherFile*>(p); }
sqlite3_file* real_of(sqlite3_file* p) { return as_gather(p)->real; }

int write_gathered(GatherFile* f) {
  if (!f->gathered || f->gathered->empty()) return SQLITE_OK;

  const int rc = f->real->pMethods->xWrite(f->real, f->gathered->data(), static_cast<int>(f->gathered->size()), f->at);
  f->gathered->clear();
  return rc;
}

int x_close(sqlite3_file* p) {
  GatherFile* f = as_gather(p);
  const int written = write_gathered(f);
  const int closed = f->real->pMethods->xClose(f->real);
  if (f->peer && f->peer->peer == f) f->peer->peer = nullptr;
  delete f->gathered;
  f->gathered = nullptr;
  return written != SQLITE_OK ? written : closed;
}

int x_read(sqlite3_file* p, void* out, int n, sqlite3_int64 offset) {
  if (int rc = write_gathered(as_gather(p)); rc != SQLITE_OK) return rc;
  return real_of(p)->pMethods->xRead(real_of(p), out, n, offset);
}

int x_write(sqlite3_file* p, const void* data, int n, sqlite3_int64 offset) {
  GatherFile* f = as_gather(p);
  if (!f->gathered) return f->real->pMethods->xWrite(f->real, data, n, offset);
  // The WAL's header is written at 0 only when the log starts over.
  if (offset == 0) f->end = 0;
  std::string& gathered = *f->gathered;
  const bool contiguous = !gathered.empty() && offset == f->at + static_cast<sqlite3_int64>(gathered.size());
  const bool append = contiguous || (gathered.empty() && offset >= f->end);
  if (!append) {
    if (int rc = write_gathered(f); rc != SQLITE_OK) return rc;
    f->commit_follows = false;
    if (offset + n > f->end) f->end = offset + n;
    return f->real->pMethods->xWrite(f->real, data, n, offset);
  }
  if (gathered.size() + static_cast<std::size_t>(n) > kMaxGathered) {
    if (int rc = write_gathered(f); rc != SQLITE_OK) return rc;
  }
  if (gathered.empty()) f->at = offset;
  try {
    if (gathered.capacity() < kFirstRoom) gathered.reserve(kFirstRoom);
    gathered.append(static_cast<const char*>(data), static_cast<std::size_t>(n));
  } catch (const std::bad_alloc&) {
    // Nothing throws through SQLite: write what is gathered, then this.
    if (int rc = write_gathered(f); rc != SQLITE_OK) return rc;
    f->commit_follows = false;
    return f->real->pMethods->xWrite(f->real, data, n, offset);
  }
  f->end = offset + n;
  if (n == kFrameHeaderBytes) {
    // Bytes 4..7 of a frame header: the database's size in pages after a
    // commit, zero for any other frame.
    const auto* header = static_cast<const unsigned char*>(data);
    f->commit_follows = (header[4] | header[5] | header[6] | header[7]) != 0;
    return SQLITE_OK;
  }
  if (n != kWalHeaderBytes && f->commit_follows) {
    f->commit_follows = false;
    return write_gathered(f);
  }
  return SQLITE_OK;
}

int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
  if (int rc = write_gathered(as_gather(p)); rc != SQLITE_OK) return rc;
  return real_of(p)->pMethods->xTruncate(real_of(p), size);
}

int x_sync(sqlite3_file* p, int flags) {
  if (int rc = write_gathered(as_gather(p)); rc != SQLITE_OK) return rc;
  return real_of(p)->pMethods->xSync(real_of(p), flags);
}

int x_file_size(sqlite3_file* p, sqlite3_int64* size) {
  if (int rc = write_gathered(as_gather(p)); rc != SQLITE_OK) return rc;
  return real_of(p)->pMethods->xFileSize(real_of(p), size);
}

int x_lock(sqlite3_file* p, int level) { return real_of(p)->pMethods->xLock(real_of(p), level); }
int x_unlock(sqlite3_file* p, int level) { return real_of(p)->pMethods->xUnlock(real_of(p), level); }
int x_check_reserved(sqlite3_file* p, int* out) {
  return real_of(p)->pMethods->xCheckReservedLock(real_of(p), out);
}

int x_file_control(sqlite3_file* p, int op, void* arg) {
  if (int rc = write_gathered(as_gather(p)); rc != SQLITE_OK) return rc;
  return real_of(p)->pMethods->xFileControl(real_of(p), op, arg);
}

int x_sector_size(sqlite3_file* p) { return real_of(p)->pMethods->xSectorSize(real_of(p)); }
int x_device(sqlite3_file* p) { return real_of(p)->pMethods->xDeviceCharacteristics(real_of(p)); }

int x_shm_map(sqlite3_file* p, int region, int size, int extend, void volatile** out) {
  return real_of(p)->pMethods->xShmMap(real_of(p), region, size, extend, out);
}

int x_shm_lock(sqlite3_file* p, int offset, int n, int flags) {
  GatherFile* f = as_gather(p);
  if ((flags & SQLITE_SHM_UNLOCK) && offset <= kWalWriteLock && offset + n > kWalWriteLock && f->peer) {
    // The write transaction ends: nothing of it may stay in memory once
    // another connection can write frames at the same offsets. A failure
    // here loses only frames no commit covers, which readers ignore.
    (void)write_gathered(f->peer);
    f->peer->commit_follows = false;
    f->peer->end = 0;
  }
  return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

void x_shm_barrier(sqlite3_file* p) { real_of(p)->pMethods->xShmBarrier(real_of(p)); }
int x_shm_unmap(sqlite3_file* p, int remove) { return real_of(p)->pMethods->xShmUnmap(real_of(p), remove); }

int x_fetch(sqlite3_file* p, sqlite3_int64 offset, int n, void** out) {
  return real_of(p)->pMethods->xFetch(real_of(p), offset, n, out);
}
int x_unfetch(sqlite3_file* p, sqlite3_int64 offset, void* page) {
  return real_of(p)->pMethods->xUnfetch(real_of(p), offset, page);
}

int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags) {
  GatherFile* f = as_gather(p);
  std::memset(f, 0, sizeof(GatherFile));
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + kRealOffset);
  f->real->pMethods = nullptr;
  const int rc = g_base->xOpen(g_base, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    // SQLite closes a file whose pMethods is set even when the open failed;
    // ours stays unset, so the real one is closed here.
    if (f->real->pMethods) f->real->pMethods->xClose(f->real);
    return rc;
  }
  if ((flags & SQLITE_OPEN_WAL) && name) {
    // Without memory to gather in, the file is written through.
    f->gathered = new (std::nothrow) std::string();
    sqlite3_file* db = sqlite3_database_file_object(name);
    if (db && (db->pMethods == &g_methods[0] || db->pMethods == &g_methods[1] || db->pMethods == &g_methods[2])) {
      f->peer = as_gather(db);
      f->peer->peer = f;
    }
  }
  const int version = f->real->pMethods->iVersion;
  f->base.pMethods = &g_methods[version >= 3 ? 2 : version <= 1 ? 0 : 1];
  return SQLITE_OK;
}

}  // namespace

void install_wal_gathering() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_base = sqlite3_vfs_find(nullptr);
    if (!g_base) return;
    g_vfs = *g_base;
    g_vfs.zName = "harnessd-wal-gather";
    g_vfs.szOsFile = static_cast<int>(kRealOffset) + g_base->szOsFile;
    g_vfs.xOpen = x_open;
    for (int i = 0; i < 3; ++i) {
      g_methods[i] = sqlite3_io_methods{i + 1,      x_close,     x_read,        x_write,          x_truncate,
                                        x_sync,     x_file_size, x_lock,        x_unlock,         x_check_reserved,
                                        x_file_control, x_sector_size, x_device, x_shm_map,       x_shm_lock,
                                        x_shm_barrier,  x_shm_unmap,   x_fetch,  x_unfetch};
    }
    (void)sqlite3_vfs_register(&g_vfs, 1);
  });
}

}  // namespace harnessd::worker
