// A full disk delays ledger lines but never loses or cuts one: a failed
// write leaves the file as it was (append_whole) and the line waits.
#include "worker/ledger_file.h"

#include <unistd.h>

#include <cerrno>

#include "acp/log.h"

namespace harnessd::worker {

Expected<void> LedgerFile::append(std::string line, bool sync, const Fallback& fallback) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(std::move(line));
  pending_sync_ = pending_sync_ || sync;
  auto r = write_pending();
  if (!r) {
    if (fallback) pending_.back() = fallback(r.error().message);
    if (pending_.size() > kMaxPending) {
      acp::log::error("ledger.jsonl: " + std::to_string(pending_.size()) +
                      " lines wait for space; the oldest is dropped");
      pending_.pop_front();
    }
    has_pending_ = true;
  }
  return r;
}

void LedgerFile::retry() {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t n = pending_.size();
  if (n && write_pending())
    acp::log::warn("ledger.jsonl: " + std::to_string(n) + " line(s) that had failed are now written");
}

Expected<void> LedgerFile::write_pending() {
  if (pending_.empty()) return {};
  if (!fd_) {
    auto opened = open_append(root_, kRel);
    if (!opened) return opened.error();
    fd_.reset(*opened);
  }
  std::string data;
  for (const auto& l : pending_) data += l;
  if (auto b = budget_.take(data.size(), kRel); !b) return b;
  if (auto w = append_whole(fd_.get(), data, kRel); !w) return w;
  // Written: a failing flush is reported, the lines are not written twice.
  bool sync = pending_sync_;
  pending_.clear();
  pending_sync_ = false;
  has_pending_ = false;
  if (sync && ::fdatasync(fd_.get()) != 0) return io_error("sync", kRel, errno);
  return {};
}

}  // namespace harnessd::worker
