// An adapter started ahead of need, and what it did until it was taken.
#include "adapters/prestart.h"

#include <utility>
#include <vector>

#include "acp/log.h"

namespace harnessd::adapters {

/// What the process reported while nobody had taken it, in order; once it
/// is taken and that is replayed, events pass straight on. Owned by the
/// process's callbacks: it goes with the process.
struct Prestart::Events {
  struct Event {
    enum Kind { kOut, kErr, kOutClosed, kExit } kind;
    std::string data;  // kOut, kErr
    ExitStatus status;  // kExit
  };

  Process::Callbacks target;
  bool replayed = false;
  std::vector<Event> seen;
  std::size_t bytes = 0;  // of output kept in `seen`
  bool overflowed = false;  // more than kMaxKept came: not to be taken

  void deliver(const Event& e) {
    switch (e.kind) {
      case Event::kOut:
        if (target.on_stdout) target.on_stdout(e.data);
        break;
      case Event::kErr:
        if (target.on_stderr) target.on_stderr(e.data);
        break;
      case Event::kOutClosed:
        if (target.on_stdout_closed) target.on_stdout_closed();
        break;
      case Event::kExit:
        if (target.on_exit) target.on_exit(e.status);
        break;
    }
  }
  void add(Event e) {
    if (replayed) return deliver(e);
    if (overflowed) return;
    bytes += e.data.size();
    if (bytes > kMaxKept) {
      overflowed = true;
      seen.clear();
      return;
    }
    seen.push_back(std::move(e));
  }
  void replay() {
    // Delivery may add more (a callback that reads stderr at once): those
    // come after, in order.
    for (std::size_t i = 0; i < seen.size(); ++i) {
      Event e = seen[i];
      deliver(e);
    }
    seen.clear();
    replayed = true;
  }
};

Prestart::Prestart(acp::Loop& loop, ProcessSpec spec)
    : loop_(loop), spec_(std::move(spec)), events_(std::make_shared<Events>()) {
  auto launched = Process::launch(spec_, [&loop, alive = std::weak_ptr<bool>(alive_), this] {
    loop.post_from_any_thread([alive, this] {
      if (alive.lock()) adopt();
    });
  });
  if (!launched) {
    acp::log::info("could not start the adapter ahead of need: " + launched.error().message);
    return;
  }
  launch_ = std::move(*launched);
}

void Prestart::adopt() {
  if (!launch_) return;
  Process::Callbacks callbacks;
  using Event = Events::Event;
  callbacks.on_stdout = [events = events_](std::string_view data) {
    events->add({Event::kOut, std::string(data), {}});
  };
  callbacks.on_stderr = [events = events_](std::string_view data) {
    events->add({Event::kErr, std::string(data), {}});
  };
  callbacks.on_stdout_closed = [events = events_] { events->add({Event::kOutClosed, {}, {}}); };
  callbacks.on_exit = [events = events_](const ExitStatus& status) { events->add({Event::kExit, {}, status}); };
  auto process = Process::finish(loop_, std::move(launch_), std::move(callbacks));
  if (!process) {
    acp::log::info("could not start the adapter ahead of need: " + process.error().message);
    return;
  }
  process_ = std::move(*process);
}

Prestart::~Prestart() { discard(); }

std::unique_ptr<Process> Prestart::take(const ProcessSpec& spec, Process::Callbacks& callbacks) {
  adopt();
  if (!process_) return nullptr;
  if (!(spec == spec_)) {
    acp::log::info("the adapter started ahead of need is not the one asked for; it is stopped");
    discard();
    return nullptr;
  }
  if (events_->overflowed) {
    acp::log::info("the adapter started ahead of need wrote over " + std::to_string(kMaxKept) +
                   " bytes before it was asked for anything; it is stopped");
    discard();
    return nullptr;
  }
  acp::log::debug("the adapter started ahead of need (pid " + std::to_string(process_->pid()) + ") is taken over");
  events_->target = std::move(callbacks);
  // The caller first keeps the process and sets up what its callbacks
  // use; the process's own events keep waiting behind these meanwhile.
  loop_.post([weak = std::weak_ptr<Events>(events_)] {
    if (auto events = weak.lock()) events->replay();
  });
  events_.reset();  // the process's callbacks keep it, as long as it lives
  return std::move(process_);
}

int Prestart::pid() {
  adopt();
  return process_ ? process_->pid() : 0;
}

void Prestart::discard() {
  adopt();  // waits for the exec: what it started is stopped below
  // Destroying a Process whose child runs kills its group and reaps it
  // in the background.
  process_.reset();
  events_.reset();
}

}  // namespace harnessd::adapters
