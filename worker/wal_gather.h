// A VFS over SQLite's own that writes a transaction's WAL frames with one
// system call instead of two per page.
#pragma once

namespace harnessd::worker {

/// Registers, once per process and as SQLite's default, a VFS that passes
/// everything to the default one except appends to a WAL file: those are
/// gathered and written together when the commit frame's page arrives.
/// Every other call on the WAL (read, sync, size, truncate, file control,
/// close) and the release of the WAL's write lock write what is gathered
/// first, so another connection never reads, and the write lock never
/// leaves this connection with, a frame still in memory. Safe to call from
/// any thread; the registration is SQLite's, hence process-wide.
void install_wal_gathering();

}  // namespace harnessd::worker
