// Adapters started ahead of need.
#include "adapters/warm_pool.h"

#include "acp/log.h"
#include "adapters/adapter_session.h"
#include "schema/acp.h"

namespace harnessd::adapters {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct WarmPool::Entry final : LiveAdapters::Member {
  explicit Entry(WarmPool& p) : pool(p) {}
  void evict(const char* why) override {
    acp::log::info("warm adapter of harness '" + pool.options_.harness + "' stopped: " + why);
    pool.drop(this, std::nullopt);
  }

  WarmPool& pool;
  std::unique_ptr<AdapterLink> link;
  json answer;  // to initialize, once ready
  Clock::time_point spawned;
  std::chrono::milliseconds start_time{0};
  std::unique_ptr<acp::Timer> deadline;
  bool admitted = false;  // by the breaker, which has not heard how the start went
  bool ready = false;
};

WarmPool::WarmPool(acp::Loop& loop, Reaper& reaper, LiveAdapters* live, StartBreaker* breaker, Options options)
    : loop_(loop), reaper_(reaper), live_(live), breaker_(breaker), options_(std::move(options)) {}

WarmPool::~WarmPool() {
  stop();
  *alive_ = false;
}

std::size_t WarmPool::ready() const {
  std::size_t n = 0;
  for (const auto& e : entries_) n += e->ready;
  return n;
}

json WarmPool::status() const {
  return {{"size", options_.size}, {"ready", ready()}, {"starting", starting()}};
}

void WarmPool::stop() {
  stopped_ = true;
  retry_.reset();
  while (!entries_.empty()) drop(entries_.front().get(), std::nullopt);
}

void WarmPool::fill() {
  if (stopped_) return;
  json offered = options_.client_capabilities();
  if (offered != offered_) {
    // The host offers something else now: adapters told otherwise go.
    while (!entries_.empty()) drop(entries_.front().get(), std::nullopt);
    offered_ = std::move(offered);
  }
  if (entries_.size() < options_.size && Clock::now() < quiet_until_) {
    return retry_after(std::chrono::ceil<std::chrono::milliseconds>(quiet_until_ - Clock::now()));
  }
  while (entries_.size() < options_.size) {
    if (breaker_) {
      if (auto refused = breaker_->admit()) {
        // Tried again once the harness may be available.
        return retry_after(std::chrono::milliseconds(refused->data.value("retryAfterMs", 1000LL)));
      }
    }
    LiveAdapters::Slot slot;
    if (live_) {
      slot = live_->try_acquire();
      if (!slot) {
        if (breaker_) breaker_->abandoned();
        return;  // on_room brings the pool back
      }
    }
    AdapterOptions link_options = options_.link();
    link_options.slot = std::move(slot);
    Expected<std::unique_ptr<AdapterLink>> link = Error{""};
    if (auto limited = apply_limits(link_options, options_.limits, options_.harness); !limited) {
      link = Error{"its limits (" + options_.limits.describe() + "): " + limited.error().message};
    } else {
      link = AdapterLink::start(loop_, std::move(link_options), nullptr);
    }
    if (!link) {
      RpcError e{rpc_code::kHarnessUnavailable,
                 "harness '" + options_.harness + "' cannot start: " + link.error().message,
                 {{"harness", options_.harness}}};
      acp::log::warn("warm adapter: " + e.message);
      if (breaker_) breaker_->failed(e);
      quiet_until_ = Clock::now() + std::chrono::seconds(1);
      return retry_after(std::chrono::seconds(1));
    }
    auto entry = std::make_unique<Entry>(*this);
    Entry* raw = entry.get();
    raw->link = std::move(*link);
    raw->spawned = Clock::now();
    raw->admitted = breaker_ != nullptr;
    entries_.push_back(std::move(entry));
    raw->link->set_on_exit([this, raw](const ExitStatus& status) {
      RpcError e{rpc_code::kAdapterFailed,
                 "warm adapter of harness '" + options_.harness + "' exited (" + status.describe() + ")",
                 {{"harness", options_.harness}, {"stderrTail", raw->link->stderr_tail()}}};
      acp::log::info(e.message);
      drop(raw, e);
    });
    raw->link->set_on_output_closed([this, raw] {
      drop(raw, RpcError{rpc_code::kAdapterFailed,
                         "warm adapter of harness '" + options_.harness + "' closed its output",
                         {{"harness", options_.harness}}});
    });
    raw->deadline = std::make_unique<acp::Timer>(loop_);
    raw->deadline->start(options_.start_timeout, [this, raw] {
      drop(raw, RpcError{rpc_code::kAdapterFailed,
                         "warm adapter of harness '" + options_.harness + "' did not answer initialize in time",
                         {{"harness", options_.harness}}});
    });
    std::weak_ptr<bool> alive = alive_;
    AdapterLink* link_raw = raw->link.get();
    raw->link->rpc().call("initialize", initialize_params(offered_),
                          [this, alive, raw, link_raw](acp::Connection::CallResult r) {
                            if (alive.expired()) return;
                            // Dropped or taken meanwhile: nothing to do.
                            for (const auto& e : entries_) {
                              if (e.get() == raw && e->link.get() == link_raw) return started(raw, std::move(r));
                            }
                          });
  }
}

void WarmPool::started(Entry* entry, Expected<json, RpcError> answer) {
  if (!answer) {
    return drop(entry, RpcError{rpc_code::kAdapterFailed,
                                "warm adapter of harness '" + options_.harness +
                                    "' failed to initialize: " + answer.error().message,
                                {{"harness", options_.harness}}});
  }
  json version = answer->is_object() ? answer->value("protocolVersion", json()) : json();
  if (version != schema::kProtocolVersion) {
    return drop(entry, RpcError{rpc_code::kAdapterFailed,
                                "warm adapter of harness '" + options_.harness + "' speaks ACP protocol version " +
                                    version.dump() + ", not 1",
                                {{"harness", options_.harness}}});
  }
  entry->deadline.reset();
  entry->answer = std::move(*answer);
  entry->start_time = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - entry->spawned);
  entry->ready = true;
  if (std::exchange(entry->admitted, false)) breaker_->succeeded();
  if (live_) live_->spare(*entry);
  acp::log::debug("warm adapter of harness '" + options_.harness + "' ready (pid " +
                  std::to_string(entry->link->pid()) + ", " + std::to_string(entry->start_time.count()) + " ms)");
}

std::optional<WarmAdapter> WarmPool::take(const json& client_capabilities) {
  if (stopped_ || client_capabilities != offered_) return std::nullopt;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    Entry& e = **it;
    if (!e.ready || e.link->exited() || e.link->output_closed()) continue;
    if (live_) live_->busy(e);
    e.link->set_on_exit(nullptr);
    e.link->set_on_output_closed(nullptr);
    WarmAdapter warm{std::move(e.link), std::move(e.answer), e.start_time};
    entries_.erase(it);
    // A replacement, from a fresh stack.
    loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
      if (!alive.expired()) fill();
    });
    return warm;
  }
  return std::nullopt;
}

void WarmPool::retry_after(std::chrono::milliseconds delay) {
  if (!retry_) retry_ = std::make_unique<acp::Timer>(loop_);
  if (retry_->active()) return;
  retry_->start(std::max(delay, std::chrono::milliseconds(100)), [this] { fill(); });
  retry_->unref();  // a warm pool alone does not keep harnessd running
}

void WarmPool::drop(Entry* entry, std::optional<RpcError> failure) {
  if (live_) live_->busy(*entry);
  if (failure) {
    quiet_until_ = Clock::now() + std::chrono::seconds(1);
    retry_after(std::chrono::seconds(1));
  }
  if (std::exchange(entry->admitted, false)) {
    if (failure) {
      breaker_->failed(*failure);
    } else {
      breaker_->abandoned();
    }
  }
  if (entry->link) reaper_.adopt(std::move(entry->link), options_.kill_grace);
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->get() != entry) continue;
    entries_.erase(it);
    break;
  }
}

}  // namespace harnessd::adapters
