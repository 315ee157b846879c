// The state database's writer thread: group commit, and entries that wait
// in order while the database cannot take them (a full disk).
#include "worker/db_writer.h"

#include "acp/log.h"
#include "worker/database.h"

namespace harnessd::worker {

DbWriter::DbWriter(WriteCompletions& completions, std::unique_ptr<StateDb> db)
    : completions_(completions), db_(std::move(db)) {
  thread_ = std::thread([this] { run(); });
}

DbWriter::~DbWriter() {
  queue_.stop();
  thread_.join();
  acp::log::info("state database: " + std::to_string(jobs_written_) + " writes in " + std::to_string(commits_) +
                 " commits");
  if (!pending_.empty()) {
    acp::log::error(std::to_string(pending_.size()) +
                    " ledger entries could not be written to the state database before harnessd stopped");
  }
}

void DbWriter::run() {
  std::deque<Job> batch;
  // Entries that wait for space are tried again every second.
  while (queue_.take(batch, pending_.empty() ? std::nullopt
                                             : std::optional<std::chrono::milliseconds>(std::chrono::seconds(1)))) {
    // A prompt's queued entry, and the started entry of the one after it,
    // usually precede the end of a run by well under a millisecond: one
    // commit instead of two (each costs a lock round and the pages it
    // touches in the WAL).
    const auto until = std::chrono::steady_clock::now() + kLazyHold;
    while (pending_.empty() && all_lazy(batch)) {
      auto left = std::chrono::duration_cast<std::chrono::microseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !queue_.take_more(batch, left)) break;
    }
    WriteCompletions::Finished finished;
    write(batch, finished);
    batch.clear();
    if (!finished.empty()) completions_.push(std::move(finished));
  }
  (void)write_pending();  // a last try
}

bool DbWriter::all_lazy(const std::deque<Job>& batch) {
  for (const Job& job : batch) {
    if (!job.lazy) return false;
  }
  return !batch.empty();
}

void DbWriter::keep_pending(LedgerEntry entry) {
  if (pending_.size() >= kMaxPending) {
    acp::log::error("the state database takes no writes; the ledger entry " + pending_.front().event + " of run " +
                    pending_.front().runId + " is dropped");
    pending_.pop_front();
  }
  pending_.push_back(std::move(entry));
}

Expected<void> DbWriter::write_pending() {
  if (pending_.empty()) return {};
  auto tx = Transaction::begin(db_->db());
  if (!tx) return std::move(tx).error();
  for (const auto& e : pending_) {
    if (auto r = db_->apply_one(e); !r) return std::move(r).error();
  }
  if (auto r = tx->commit(); !r) return std::move(r).error();
  acp::log::info(std::to_string(pending_.size()) + " ledger entries that waited are written");
  pending_.clear();
  return {};
}

Expected<void> DbWriter::write_one(Job& job) {
  if (job.entry) {
    if (job.fallback) {
      if (auto failed = failed_runs_.find(job.entry->runId); failed != failed_runs_.end()) {
        job.entry = job.fallback(failed->second);
        failed_runs_.erase(failed);
      }
    }
    auto r = db_->apply_one(*job.entry);
    if (!r) return std::move(r).error();
    return {};  // a second end is refused by the database, logged, not an error of this write
  }
  if (job.record) return db_->save_session(*job.record);
  if (job.apply) return job.apply(*db_);
  return {};
}

void DbWriter::finish(Job& job, Expected<void> result, WriteCompletions::Finished& finished) {
  static const LedgerEntry kNone;
  if (job.on_writer) job.on_writer(result, job.entry ? *job.entry : kNone);
  if (job.done) finished.emplace_back(std::move(job.done), std::move(result));
}

void DbWriter::write(std::deque<Job>& batch, WriteCompletions::Finished& finished) {
  // Entries that waited go first: a run's transitions stay in order.
  Expected<void> result = write_pending();
  if (result) {
    auto tx = Transaction::begin(db_->db());
    if (!tx) {
      result = std::move(tx).error();
    } else {
      for (auto& job : batch) {
        if (result = write_one(job); !result) break;
      }
      if (result) result = tx->commit();
    }
  }
  if (result) {
    ++commits_;
    jobs_written_ += batch.size();
    for (auto& job : batch) finish(job, {}, finished);
    return;
  }
  // The transaction was rolled back. Each job on its own now: one that
  // cannot be written fails alone; entries then wait, in order, once one
  // had to wait.
  for (auto& job : batch) {
    Expected<void> one = pending_.empty() ? Expected<void>{} : Expected<void>(Error{result.error().message});
    if (one) {
      auto tx = Transaction::begin(db_->db());
      if (!tx) {
        one = std::move(tx).error();
      } else if (one = write_one(job); one) {
        one = tx->commit();
      }
    }
    if (!one && job.entry) {
      const std::string& why = one.error().message;
      if (job.fallback) {
        job.entry = job.fallback(why);
        failed_runs_.erase(job.entry->runId);
      } else if ((job.done || job.on_writer) && !is_terminal_event(job.entry->event)) {
        if (failed_runs_.size() >= 4096) failed_runs_.clear();  // bounded; a run's end normally takes its mark
        failed_runs_.try_emplace(job.entry->runId, why);
      }
      keep_pending(*job.entry);
    }
    if (!one) acp::log::warn("state database: " + one.error().message);
    finish(job, std::move(one), finished);
  }
}

}  // namespace harnessd::worker
