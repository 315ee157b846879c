// The state database's writer thread: group commit, and entries that wait
// in order while the database cannot take them (a full disk).
#include "worker/db_writer.h"

#include <algorithm>
#include <utility>

#include "acp/log.h"
#include "worker/database.h"

namespace harnessd::worker {

DbWriter::DbWriter(WriteCompletions& completions, std::unique_ptr<StateDb> db)
    : completions_(completions), db_(std::move(db)) {
  // Checkpoints run on a thread with a connection of its own, both made
  // when the first one is due: a one-shot `harnessd run` never needs them.
  // Without that connection they run on the writer, between two commits:
  // slower answers now and then, nothing lost.
  db_->db().on_commit([this](int frames) {
    // Asked once per kCheckpointFrames: a checkpoint that could not let
    // the WAL start over (commits kept coming) is not asked again at
    // every commit after it.
    if (frames < asked_at_) asked_at_ = 0;  // the WAL started over
    if (frames < asked_at_ + kCheckpointFrames) return;
    asked_at_ = frames;
    if (frames >= kInlineCheckpointFrames || checkpoint_unavailable_.load(std::memory_order_acquire)) {
      // Commits follow each other too closely for the WAL ever to start
      // over behind the thread's checkpoints: the writer copies it now,
      // between two commits, so that the next write starts it over.
      if (auto r = db_->db().checkpoint(); !r) acp::log::warn("state database: " + r.error().message);
      ++inline_checkpoints_;
      return;
    }
    if (!checkpoint_thread_.joinable()) checkpoint_thread_ = std::thread([this] { checkpoints(); });
    {
      std::lock_guard<std::mutex> lock(checkpoint_mu_);
      if (checkpoint_wanted_) return;
      checkpoint_wanted_ = true;
    }
    checkpoint_cv_.notify_one();
  });
  thread_ = std::thread([this] { run(); });
}

DbWriter::~DbWriter() {
  queue_.stop();
  thread_.join();
  if (checkpoint_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(checkpoint_mu_);
      checkpoint_stop_ = true;
    }
    checkpoint_cv_.notify_one();
    checkpoint_thread_.join();
  }
  db_->db().on_commit(nullptr);
  checkpoint_db_.reset();
  acp::log::info("state database: " + std::to_string(jobs_written_) + " writes in " + std::to_string(commits_) +
                 " commits, " + std::to_string(group_waits_) + " of them after a wait for company; " +
                 std::to_string(checkpoints_done_) + " checkpoints on their own thread, " +
                 std::to_string(inline_checkpoints_) + " on the writer's; " + std::to_string(file_jobs_) +
                 " file jobs");
  if (!pending_.empty()) {
    acp::log::error(std::to_string(pending_.size()) +
                    " ledger entries could not be written to the state database before harnessd stopped");
  }
}

void DbWriter::run() {
  name_this_thread("hd-writer");
  // Vectors, not deques: a job is larger than a deque's block, so a deque
  // would allocate for each one; these keep their room from batch to batch.
  std::vector<Job> batch;
  // Entries that wait for space are tried again every second.
  while (queue_.take(batch, pending_.empty() ? std::nullopt
                                             : std::optional<std::chrono::milliseconds>(std::chrono::seconds(1)))) {
    // Each commit costs a lock round and every page it touches in the WAL,
    // however few rows changed: a batch waits a little for company when
    // more is sure to follow (see kLazyHold, kGroupHold).
    const auto took = std::chrono::steady_clock::now();
    std::size_t ends = 0;
    std::optional<std::size_t> ends_before_wait;  // set once the batch waits for ends
    for (std::size_t noted = 0;;) {
      ends += note_runs(batch, noted);
      noted = batch.size();
      auto hold = hold_for(batch);
      if (hold == kGroupHold && !ends_before_wait) {
        // Waits that brought no other end are tried less and less often
        // (the other runs are slow ones): a host that waits for each
        // answer in turn beside a long run is not made to wait each time.
        if (group_skips_ > 0) {
          --group_skips_;
          break;
        }
        ends_before_wait = ends;
      }
      if (hold.count() == 0) break;
      auto left = std::chrono::duration_cast<std::chrono::microseconds>(took + hold - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !wait_for_company(batch, hold, left)) break;
    }
    if (ends_before_wait) {
      ++group_waits_;
      if (ends > *ends_before_wait) {
        group_backoff_ = 1;
      } else {
        group_skips_ = group_backoff_;
        group_backoff_ = std::min(2 * group_backoff_, kMaxGroupSkips);
      }
    }
    run_files(batch);
    WriteCompletions::Finished finished;
    // A batch of file jobs alone commits nothing.
    if (!batch.empty() || !pending_.empty()) write(batch, finished);
    batch.clear();
    if (!finished.empty()) completions_.push(std::move(finished));
  }
  (void)write_pending();  // a last try
}

void DbWriter::run_files(std::vector<Job>& batch) {
  if (std::none_of(batch.begin(), batch.end(), [](const Job& job) { return job.lane; })) return;
  // Lanes in the order they first appear; each lane's jobs in order. The
  // database jobs stay in the batch, in order.
  std::size_t lanes = 0;
  std::size_t kept = 0;
  for (Job& job : batch) {
    if (!job.lane) {
      if (&batch[kept] != &job) batch[kept] = std::move(job);
      ++kept;
      continue;
    }
    auto end = lanes_.begin() + static_cast<std::ptrdiff_t>(lanes);
    auto it = std::find_if(lanes_.begin(), end, [&](const auto& lane) { return lane.first == job.lane; });
    if (it == end) {
      if (lanes == lanes_.size()) lanes_.emplace_back();
      it = lanes_.begin() + static_cast<std::ptrdiff_t>(lanes++);
      it->first = job.lane;
    }
    it->second.push_back(std::move(*job.file));
    ++file_jobs_;
  }
  batch.erase(batch.begin() + static_cast<std::ptrdiff_t>(kept), batch.end());
  for (std::size_t i = 0; i < lanes; ++i) lanes_[i].first->run_batch(lanes_[i].second);  // leaves it empty
  for (Job& job : handed_) batch.push_back(std::move(job));
  handed_.clear();
}

void DbWriter::checkpoints() {
  name_this_thread("hd-checkpoint");
  if (auto opened = Database::open(db_->db().path(), {})) {
    checkpoint_db_ = std::move(*opened);
  } else {
    acp::log::warn("state database: checkpoints stay on the writer thread: " + opened.error().message);
    checkpoint_unavailable_.store(true, std::memory_order_release);
    return;
  }
  std::unique_lock<std::mutex> lock(checkpoint_mu_);
  for (;;) {
    checkpoint_cv_.wait(lock, [this] { return checkpoint_wanted_ || checkpoint_stop_; });
    if (checkpoint_stop_) return;
    lock.unlock();
    if (auto r = checkpoint_db_->checkpoint(); !r) {
      acp::log::warn("state database: " + r.error().message);
    } else {
      ++checkpoints_done_;
    }
    lock.lock();
    // Commits made meanwhile asked again only if the WAL grew past the mark
    // once more; asking is cleared after the checkpoint, not before, so a
    // long checkpoint is not followed by another at once.
    checkpoint_wanted_ = false;
  }
}

std::chrono::microseconds DbWriter::hold_for(const std::vector<Job>& batch) const {
  // Entries that wait for space go first, and are not held back further.
  if (!pending_.empty() || batch.empty() || batch.size() >= kGroupMax) return {};
  bool lazy = true;
  bool ends = false;
  for (const Job& job : batch) {
    if (job.lane) {
      // A read, a barrier, a file to write: somebody waits for it alone.
      if (!job.file->can_wait) return {};
      lazy = lazy && job.lazy;
      ends = ends || job.file->ends_run;
      continue;
    }
    // A barrier or statements of a caller's: somebody waits for them alone.
    if (!job.entry && !job.record) return {};
    lazy = lazy && job.lazy;
    ends = ends || (job.entry && is_terminal_event(job.entry->event));
  }
  // A prompt's queued entry, and the started entry of the one after it,
  // usually precede the end of a run by well under a millisecond.
  if (lazy) return kLazyHold;
  // The end of a run waits for the ends of the others.
  return ends && !open_runs_.empty() ? kGroupHold : std::chrono::microseconds{};
}

bool DbWriter::wait_for_company(std::vector<Job>& batch, std::chrono::microseconds hold, std::chrono::microseconds left) {
  const std::size_t room = kGroupMax > batch.size() ? kGroupMax - batch.size() : 1;
  if (hold == kLazyHold) {
    // Only what nobody waits for: anything else ends the wait.
    return queue_.hold(batch, left, [](const Job& job) { return !job.lazy; }, room);
  }
  // The ends of the runs still open: the wait is over once none is left
  // open, or somebody waits for a job alone. Runs that start meanwhile
  // are waited for too, as they would be after a wake-up.
  waited_runs_ = open_runs_;
  bool more = queue_.hold(
      batch, left,
      [this](const Job& job) {
        if (job.lane) {
          const StoreWriter::Job& file = *job.file;
          if (!file.can_wait) return true;
          if (file.run.empty()) return false;
          if (!file.ends_run) {
            waited_runs_.insert(file.run);
            return false;
          }
          waited_runs_.erase(file.run);
          return waited_runs_.empty();
        }
        if (!job.entry) return !job.record;
        if (!is_terminal_event(job.entry->event)) {
          waited_runs_.insert(job.entry->runId);
          return false;
        }
        waited_runs_.erase(job.entry->runId);
        return waited_runs_.empty();
      },
      room);
  waited_runs_.clear();
  return more;
}

std::size_t DbWriter::note_runs(const std::vector<Job>& batch, std::size_t from) {
  std::size_t ends = 0;
  for (std::size_t i = from; i < batch.size(); ++i) {
    const Job& job = batch[i];
    // A run's end comes as its file lane's job (its result); the entry
    // follows once that is written.
    const bool end = job.lane ? job.file->ends_run : job.entry && is_terminal_event(job.entry->event);
    const std::string* run = job.lane ? &job.file->run : job.entry ? &job.entry->runId : nullptr;
    if (!run || run->empty()) continue;
    if (end) {
      open_runs_.erase(*run);
      ++ends;
    } else {
      // Bounded: runs whose end this process never writes (it may be
      // stopped first) only cost a hold now and then.
      if (open_runs_.size() >= 100000) open_runs_.clear();
      open_runs_.insert(*run);
    }
  }
  return ends;
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

Expected<void> DbWriter::write_one(Job& job, Pairing pairing, const LedgerEntry* started) {
  if (job.entry) {
    if (job.fallback) {
      if (auto failed = failed_runs_.find(job.entry->runId); failed != failed_runs_.end()) {
        job.entry = job.fallback(*job.entry, failed->second);
        failed_runs_.erase(failed);
      }
    }
    auto r = pairing == Pairing::kStartBeforeEnd ? db_->apply_start_before_end(*job.entry)
             : pairing == Pairing::kEndAfterStart && started ? db_->apply_end_after_start(*job.entry, *started)
                 : db_->apply_one(*job.entry);
    if (!r) return std::move(r).error();
    return {};  // a second end is refused by the database, logged, not an error of this write
  }
  if (job.record) return db_->save_session(*job.record);
  if (job.apply) return job.apply(*db_);
  return {};
}

void DbWriter::finish(Job& job, Expected<void> result, WriteCompletions::Finished& finished) {
  if (job.on_writer) {
    LedgerEntry none;
    job.on_writer(result, job.entry ? *job.entry : none);
  }
  if (job.done) finished.emplace_back(std::move(job.done), std::move(result));
}

void DbWriter::pair_starts_with_ends(const std::vector<Job>& batch) {
  partner_.assign(batch.size(), kNoPartner);
  if (!pending_.empty()) return;  // entries that waited go first, one by one
  for (std::size_t end = 0; end < batch.size(); ++end) {
    const LedgerEntry* e = batch[end].entry ? &*batch[end].entry : nullptr;
    if (!e || !is_terminal_event(e->event)) continue;
    for (std::size_t start = end; start-- > 0;) {
      const LedgerEntry* s = batch[start].entry ? &*batch[start].entry : nullptr;
      if (!s || s->runId != e->runId) continue;
      // The same run as the end says it, started in this batch.
      if (s->event == run_event::kStarted && partner_[start] == kNoPartner && s->same_run(*e)) {
        partner_[start] = end;
        partner_[end] = start;
      }
      break;
    }
  }
}

void DbWriter::write(std::vector<Job>& batch, WriteCompletions::Finished& finished) {
  // Entries that waited go first: a run's transitions stay in order.
  Expected<void> result = write_pending();
  if (result) {
    auto tx = Transaction::begin(db_->db());
    if (!tx) {
      result = std::move(tx).error();
    } else {
      // A run that starts and ends within the batch has its row changed
      // once, by its end: one update fewer per prompt.
      pair_starts_with_ends(batch);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const std::size_t other = partner_[i];
        Pairing pairing = other == kNoPartner ? Pairing::kNone
                          : other > i         ? Pairing::kStartBeforeEnd
                                              : Pairing::kEndAfterStart;
        const LedgerEntry* started = pairing == Pairing::kEndAfterStart ? &*batch[other].entry : nullptr;
        if (result = write_one(batch[i], pairing, started); !result) break;
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
        job.entry = job.fallback(*job.entry, why);
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
