// The turn machinery of one session. References are to the ACP v1 spec
// ("prompt-turn", "cancellation") and to DESIGN.md "Semantics that must hold".
#include "worker/session.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string_view>
#include <utility>

#include "acp/files.h"
#include "acp/json_write.h"
#include "acp/log.h"
#include "acp/utf8.h"
#include "harnesses/packaging.h"
#include "worker/budgets.h"
#include "worker/turn_outcome.h"
#include "worker/usage.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Of a turn's answer, this many bytes are kept for a oneshot session's history.
constexpr std::size_t kMaxAnswerBytes = 32000;

}  // namespace

Session::Session(Runtime& rt, SessionInit init, std::function<void(Session&)> on_idle)
    : rt_(rt),
      init_(std::move(init)),
      options_(rt.config.harnesses, rt.harness_options),
      on_idle_(std::move(on_idle)),
      updated_at_(std::chrono::system_clock::now()),
      relay_(rt, init_.id, adapter_, *host_order_,
             {[this] { return turn_ ? turn_->recorder.get() : nullptr; },
              [this](std::string_view kind, std::string_view text) { turn_output(kind, text); },
              [this](const json& options) {
                options_.replace(options);
                return config_options();
              },
              [this] { return !init_.profile.record_metadata_only; },
              [this]() -> const PermissionGate::Scope& {
                permission_scope_.policy = init_.profile.policy;
                if (init_.permissions) permission_scope_.policy.mode = *init_.permissions;
                permission_scope_.cwd = init_.cwd;
                permission_scope_.harness = init_.profile.name;
                return permission_scope_;
              },
              [this] { return turn_ && turn_->control.stop_reason() == queue::StopReason::kCancelled; },
              [this](const json& update) { usage_reported(update); }}),
      adapter_(rt.loop, rt.reaper, rt.config.daemon.kill_grace, "session " + init_.id, init_.profile.name,
               {[this] { return adapter_spec(); },
                [this](adapters::AdapterLink& link) {
                  // A new adapter process counts its session's cost afresh.
                  adapter_cost_ = nullptr;
                  relay_.bind(link);
                },
                [this](const json& answer, bool announce) { take_adapter_options(answer, announce); },
                [this](const json& offered) {
                  adapter_defaults_ = offered;
                  rt_.harness_options[init_.profile.name] = offered;
                  save_record();  // the adapter's id is what a later lifetime resumes
                },
                // A oneshot session starts every adapter afresh.
                [this] { return !closed_ && !oneshot(); },
                [this] {
                  if (rt_.live) rt_.live->busy(*this);
                },
                // A worker host that cannot be reached stops only its own starts.
                [this] { return &rt_.breaker(init_.host.empty() ? init_.profile.name
                                                                : init_.profile.name + " on " + init_.host); },
                [this](const json& client_capabilities) -> std::optional<adapters::WarmAdapter> {
                  // Warm adapters run unsandboxed (a sandboxed profile has
                  // none): not for a session that chose a sandbox.
                  if (init_.profile.sandbox.enabled()) return std::nullopt;
                  auto pool = rt_.warm.find(init_.profile.name);
                  if (pool == rt_.warm.end()) return std::nullopt;
                  return pool->second->take(client_capabilities);
                }}) {
  adapter_.set_resume_id(init_.restore_adapter_session);
  adapter_.set_live_adapters(rt.live);
  relay_.set_client_fs(!init_.profile.remote.enabled() || init_.profile.remote.forward_client_fs);
  if (init_.profile.remote.enabled()) {
    // The worker's watch on us: it stops once it hears nothing for
    // (count + 1) intervals, whatever its sshd notices.
    front_alive_ = std::make_unique<acp::Timer>(rt.loop);
    front_alive_->start_every(std::chrono::seconds(init_.profile.remote.keepalive_interval), [this] { send_alive(); });
    front_alive_->unref();
  }
  // What waits behind an answer is host output like any other.
  if (rt.adapter_output_gate) {
    host_order_->limit(*rt.adapter_output_gate, rt.config.daemon.queue_high_water, rt.config.daemon.queue_low_water);
  }
  if (init_.created_at.empty()) init_.created_at = acp::iso_time();
  init_.profile.sandbox = adapters::tightened(init_.profile.sandbox, init_.sandbox_choice);
  adapter_defaults_ = init_.adapter_defaults;
  // Watches number the transcript's frames from the first one: a session
  // of an earlier lifetime counts what it already holds. The read is queued
  // before anything of this lifetime is appended to it.
  if (!init_.harness_fixed) {
    relay_.frames().set_base(0);
  } else {
    std::weak_ptr<bool> alive = alive_;
    rt_.store.read_transcript(init_.id, [this, alive](Expected<transcript::Expanded> read) {
      if (alive.expired()) return;
      std::uint64_t frames = 0;
      if (read) {
        for (char c : read->lines) frames += c == '\n';
      } else {
        acp::log::warn("session " + init_.id + ": cannot count its transcript for watches (" + read.error().message +
                       "); numbering from 1");
      }
      relay_.frames().set_base(frames);
    });
  }
  // Until the adapter runs, what the harness's adapter offered last time.
  options_.expect(init_.profile.name, init_.config_choices);
}

Session::~Session() {
  close();
  *alive_ = false;
}

SessionRecord Session::fields() const {
  SessionRecord r;
  r.session_id = init_.id;
  r.name = init_.name;
  r.host_session = init_.host_session;
  r.harness = init_.profile.name;
  r.cwd = init_.cwd;
  r.mode = init_.mode;
  if (!init_.template_name.empty()) r.template_name = init_.template_name;
  if (!init_.summary.empty()) r.summary = init_.summary;
  r.permissions = init_.permissions;
  if (!init_.host.empty()) r.worker_host = init_.host;
  if (init_.sandbox_choice != adapters::Sandbox{}) {
    r.sandbox = {{"mode", init_.sandbox_choice.mode}, {"network", init_.sandbox_choice.network}};
  }
  r.history = init_.history;
  r.usage = init_.usage;
  r.mcp_servers = init_.mcp_servers;
  // The adapter's session of this lifetime, else the one it is resuming,
  // else the one of the earlier lifetime.
  for (const std::string* id : {&adapter_.id(), &adapter_.resume_id(), &init_.restore_adapter_session}) {
    if (id->empty()) continue;
    r.adapter_session_id = *id;
    break;
  }
  r.run_timeout_ms = init_.run_timeout.count();
  r.lane = queue::lane_name(init_.lane);
  r.config_options = init_.config_choices;
  r.adapter_options = adapter_defaults_;
  if (oneshot()) {
    // Its adapters live for one prompt: nothing to say between them.
  } else if (adapter_.alive()) {
    r.adapter = {{"pid", adapter_.pid()}};
  } else if (!evicted_at_.empty()) {
    r.adapter = {{"evictedAt", evicted_at_}};
  }
  r.closed = closed_;
  r.daemon = rt_.store.instance();
  r.created_at = init_.created_at;
  r.updated_at = acp::iso_time();
  return r;
}

void Session::save_record() { save(fields()); }

void Session::save(const SessionRecord& r) {
  saved_record_ = r;
  saved_record_.updated_at.clear();
  saved_at_ = std::chrono::steady_clock::now();
  unsaved_time_ = false;
  std::string id = init_.id;
  rt_.store.save_session(r.to_json(), [id](Expected<void> result) {
    if (!result) acp::log::warn("session " + id + ": its record could not be saved: " + result.error().message);
  });
}

void Session::save_record_after_turn() {
  // Compared as fields: the record is turned into JSON only when written.
  SessionRecord r = fields();
  std::string updated_at = std::exchange(r.updated_at, {});
  // Its usage sum changes with every turn, like its time: within a second
  // of the last write, a change of those alone waits for the record's
  // next write or the shutdown (the ledger has each run's usage at once).
  nlohmann::json usage = std::exchange(r.usage, saved_record_.usage);
  if (r == saved_record_ && std::chrono::steady_clock::now() - saved_at_ < std::chrono::seconds(1)) {
    unsaved_time_ = true;
    return;
  }
  r.usage = std::move(usage);
  r.updated_at = std::move(updated_at);
  save(r);
}

void Session::set_summary(std::string summary) {
  init_.summary = std::move(summary);
  save_record();
}

json Session::config_options() const { return options_.list(init_.profile.name); }

Expected<void, RpcError> Session::set_harness(const harnesses::HarnessProfile& profile) {
  if (prompted_ || (adapter_.started() && !early_unused_) || init_.harness_fixed) {
    RpcError e = RpcError::invalid_params(
        "session/set_config_option: the harness of session " + init_.id + " can change only before its first prompt");
    e.data = {{"method", "session/set_config_option"}, {"field", "configId"}};
    return e;
  }
  if (profile.remote.enabled() || init_.profile.remote.enabled()) {
    // A remote session's host is chosen, and its worker started, by session/new.
    RpcError e = RpcError::invalid_params("session/set_config_option: session " + init_.id +
                                          " cannot change to or from a remote harness; open a new session for it");
    e.data = {{"method", "session/set_config_option"}, {"field", "value"}};
    return e;
  }
  // The mode and template follow the harness unless the host chose its own.
  if (init_.mode == init_.profile.mode) init_.mode = profile.mode;
  if (init_.template_name == init_.profile.template_name) init_.template_name = profile.template_name;
  if (adapter_.started()) {
    // The adapter session/new started to learn the options has done nothing
    // else: it goes, and nothing of it is resumed by the new harness.
    adapter_.retire();
    adapter_.set_resume_id("");
    adapter_defaults_ = nullptr;
  }
  init_.profile = profile;
  init_.profile.sandbox = adapters::tightened(profile.sandbox, init_.sandbox_choice);
  adapter_.set_harness(profile.name);
  options_.expect(init_.profile.name, init_.config_choices);
  save_record();
  return {};
}

template <class T>
acp::UniqueFunction<void(Expected<T, RpcError>)> Session::held(acp::UniqueFunction<void(Expected<T, RpcError>)> done) {
  auto slot = std::make_shared<acp::UniqueFunction<void(Expected<T, RpcError>)>>(std::move(done));
  const std::uint64_t key = next_held_++;
  held_.emplace(key, [slot](const RpcError& e) {
    if (auto d = std::move(*slot)) d(e);
  });
  return [this, alive = std::weak_ptr<bool>(alive_), slot, key](Expected<T, RpcError> r) {
    if (!alive.expired()) held_.erase(key);
    if (auto d = std::move(*slot)) d(std::move(r));
    if (!alive.expired()) settle();
  };
}

void Session::set_adapter_option(const std::string& config_id, const json& value,
                                 acp::UniqueFunction<void(Expected<json, RpcError>)> done) {
  done = held(std::move(done));
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive, config_id, value, done = std::move(done)](Expected<void, RpcError> ready) mutable {
    if (alive.expired()) return;
    if (!ready) return done(ready.error());
    adapter_.set_config_option(
        config_id, value,
        [this, alive, config_id, value, done = std::move(done)](acp::Connection::CallResult r) mutable {
          if (alive.expired()) return;
          if (!r) return done(r.error());
          init_.config_choices[config_id] = value;
          save_record();
          done(config_options());
        });
  });
}

void Session::set_mode(const std::string& mode_id, acp::UniqueFunction<void(Expected<void, RpcError>)> done) {
  done = held(std::move(done));
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive, mode_id, done = std::move(done)](Expected<void, RpcError> ready) mutable {
    if (alive.expired()) return;
    if (!ready) return done(ready.error());
    if (auto option = options_.mode_option()) {
      set_adapter_option(*option, mode_id, [done = std::move(done)](Expected<json, RpcError> r) mutable {
        if (!r) return done(r.error());
        done({});
      });
      return;
    }
    adapter_.set_mode(mode_id, [alive, done = std::move(done)](acp::Connection::CallResult r) mutable {
      if (alive.expired()) return;
      if (!r) return done(r.error());
      done({});
    });
  });
}

void Session::take_adapter_options(const json& answer, bool announce) {
  if (!options_.take(answer)) return;
  // session/new listed what was known of the harness before the adapter
  // ran; the host hears of the adapter's own list when it differs.
  if (announce && !early_answer_) {
    relay_.send_update({{"sessionId", init_.id},
                 {"update", {{"sessionUpdate", "config_option_update"}, {"configOptions", config_options()}}}});
  }
}


int Session::adapter_pid() const { return adapter_.pid(); }

json Session::adapter_status() const {
  if (adapter_.alive()) {
    json status = {{"state", "live"}, {"pid", adapter_.pid()}};
    if (auto since = rt_.live ? rt_.live->idle_since(*this) : std::nullopt) {
      const auto ago = std::chrono::steady_clock::now() - *since;
      status["state"] = "idle";
      status["since"] = acp::iso_time(std::chrono::system_clock::now() -
                                      std::chrono::duration_cast<std::chrono::system_clock::duration>(ago));
    }
    return status;
  }
  if (adapter_.admitting()) return {{"state", "waiting"}};
  if (!evicted_at_.empty()) return {{"state", "evicted"}, {"since", evicted_at_}};
  return {{"state", "none"}};
}

void Session::settle() {
  if (!rt_.live || closed_ || turn_ || oneshot() || !held_.empty() || early_answer_ || !adapter_.ready()) return;
  rt_.live->idle(*this);
}

void Session::evict(const char* why) {
  if (closed_ || turn_ || !adapter_.started()) return;
  acp::log::info("session " + init_.id + ": evicting its idle adapter (" + why + "); the next prompt resumes it");
  evicted_at_ = acp::iso_time();
  // Told to close its session, then EOF; as long as a cancelled turn has
  // to go before the ladder goes on.
  adapter_.evict(rt_.config.daemon.cancel_grace);
  save_record();
}

const char* Session::state() const { return turn_ ? queue::turn_state_name(turn_->control.state()) : "idle"; }

json Session::active_request_id() const { return turn_ ? turn_->prompt.ledger.requestId : json(); }

std::optional<std::string> Session::active_run_id() const {
  if (!turn_) return std::nullopt;
  return turn_->prompt.run_id;
}

void Session::start_turn(QueuedPrompt prompt) {
  if (rt_.live) rt_.live->busy(*this);
  updated_at_ = std::chrono::system_clock::now();
  prompted_ = true;
  turn_ = std::make_unique<Turn>(next_generation_++);
  turn_->prompt = std::move(prompt);
  turn_->control.start();
  turn_->started_at = acp::iso_time();
  const std::uint64_t generation = turn_->control.generation();
  // The deadline counts from the turn's start, not from when it was queued.
  if (turn_->prompt.timeout.count() > 0) {
    turn_->deadline = std::make_unique<acp::Timer>(rt_.loop);
    turn_->deadline->start(turn_->prompt.timeout, [this, generation] {
      if (turn_ && turn_->control.generation() == generation) stop_turn(queue::StopReason::kTimeout);
    });
  }
  // The user's prompt goes into the transcript as the updates a replay
  // shows (ACP session/load replays the user's messages this way).
  // Written as to_line() would write them, without building each message.
  for (const auto& block : turn_->prompt.blocks) {
    std::string line = R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":)";
    acp::utf8::append_json_string(line, init_.id);
    line += R"(,"update":{"content":)";
    acp::append_json(line, block);
    line += R"(,"sessionUpdate":"user_message_chunk"}}})";
    line += '\n';
    relay_.record_transcript(std::move(line));
  }
  turn_->task = harnesses::prompt_task(turn_->prompt.blocks);
  if (turn_->prompt.packaging) {
    // Packaged now, not when queued: the history must include the turn
    // that just ended.
    harnesses::PackageInput in;
    in.blocks = turn_->prompt.blocks;
    in.context = turn_->prompt.context;
    if (oneshot()) in.history = init_.history;
    in.summary = init_.summary;
    in.workspace = init_.cwd;
    in.harness = init_.profile.name;
    in.session = init_.name.value_or(init_.id);
    in.run_dir = rt_.store.path(Store::run_dir(turn_->prompt.run_id));
    harnesses::Packaged packaged = harnesses::package_prompt(*turn_->prompt.packaging, in);
    turn_->packaged_blocks = prepare_packaged_run(turn_->prompt, packaged);
  } else {
    prepare_run(turn_->prompt);
  }
  // A plain prompt's run folder was prepared while the previous turn ran,
  // and the turn does not wait for it; a packaged one waits for the files
  // its harness is told to read.
  turn_->recorder = std::move(turn_->prompt.recorder);
  relay_.permissions().turn_started();
  std::string request_line = acp::to_line(turn_->prompt.request);
  request_line.pop_back();
  turn_->recorder->event("host>harnessd", request_line, true);
  std::weak_ptr<bool> alive = alive_;
  turn_->recorder->open([this, alive, generation](Expected<void> opened) {
    if (alive.expired() || closed_) return;
    turn_recording_ready(generation, std::move(opened));
  });
}

void Session::turn_recording_ready(std::uint64_t generation, Expected<void> opened) {
  if (!turn_ || turn_->control.generation() != generation) return;
  if (!opened) {
    turn_->error = opened.error().message;
    turn_->control.request_stop(queue::StopReason::kError);
    finish_turn(generation, RpcError::internal(turn_->error));
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  turn_->recorder->on_failure([this, alive, generation](const std::string& why) {
    if (alive.expired() || closed_ || !turn_ || turn_->control.generation() != generation) return;
    acp::log::error("session " + init_.id + ": run " + turn_->prompt.run_id + " cannot be recorded: " + why);
    turn_->error = why;
    stop_turn(queue::StopReason::kError);
  });
  ensure_adapter([this, generation](Expected<void, RpcError> ready) {
    if (!turn_ || turn_->control.generation() != generation) return;
    if (!ready) {
      finish_turn(generation, ready.error());
      return;
    }
    // The first run on an adapter says how it was started (for this
    // turn, for session/new or for a load) and how long that took.
    if (adapter_.starts() != reported_start_) {
      reported_start_ = adapter_.starts();
      turn_->adapter_start = adapter_.start_report();
    }
    send_prompt();
  });
}

// ---------------------------------------------------------------- adapter start-up

void Session::start_adapter_early(acp::UniqueFunction<void(json)> done) {
  early_answer_ = std::move(done);
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive](Expected<void, RpcError> ready) {
    if (alive.expired()) return;
    if (!ready)
      acp::log::warn("session " + init_.id + ": " + ready.error().message + "; the first prompt starts it again");
    answer_early();
    settle();
  });
  early_unused_ = true;
}

std::string Session::remote_cwd() const {
  if (!init_.profile.remote.enabled()) return init_.cwd;
  // Checked when the config was read.
  auto cwd = harnesses::expand(init_.profile.remote.cwd, {init_.cwd, init_.id, init_.profile.name});
  return cwd ? *cwd : init_.cwd;
}

namespace {

// ssh's own exit status when it could not connect or lost the connection
// (a remote command's 255 reads the same; a worker never exits with it),
// also as the last failure of a host whose starts the breaker now refuses.
bool unreachable(const RpcError& e) {
  if (!e.data.is_object()) return false;
  if (e.data.value("exitCode", 0) == 255) return true;
  if (e.data.value("reason", "") != "unavailable") return false;
  auto last = e.data.find("lastError");
  if (last == e.data.end() || !last->is_object()) return false;
  auto data = last->find("data");
  return data != last->end() && data->is_object() && data->value("exitCode", 0) == 255;
}

}  // namespace

struct Session::Placing {
  std::vector<std::string> hosts;
  std::size_t next = 0;
  json tried = json::array();
  acp::UniqueFunction<void(Expected<void, RpcError>)> done;
};

void Session::place(std::vector<std::string> hosts, acp::UniqueFunction<void(Expected<void, RpcError>)> done) {
  auto placing = std::make_shared<Placing>();
  placing->hosts = std::move(hosts);
  placing->done = std::move(done);
  placing_ = placing;
  early_unused_ = false;
  try_host(std::move(placing));
}

void Session::try_host(std::shared_ptr<Placing> placing) {
  init_.host = placing->hosts.at(placing->next++);
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive, placing, &loop = rt_.loop](Expected<void, RpcError> up) mutable {
    // From a fresh stack: the adapter that failed is still unwinding its
    // exit, and what comes next may close this session, or start another.
    loop.post([this, alive, placing, up = std::move(up)]() mutable { host_tried(alive, placing, std::move(up)); });
  });
}

void Session::host_tried(const std::weak_ptr<bool>& alive, std::shared_ptr<Placing> placing,
                         Expected<void, RpcError> ready) {
  auto finish = [&](Expected<void, RpcError> outcome) {
    if (auto done = std::move(placing->done)) done(std::move(outcome));
  };
  if (alive.expired()) {
    return finish(RpcError::internal("the session closed while its worker host was being chosen"));
  }
  if (ready) {
    settle();
    return finish({});
  }
  const RpcError& e = ready.error();
  placing->tried.push_back({{"host", init_.host}, {"message", e.message}});
  if (!unreachable(e)) {
    settle();
    return finish(e);
  }
  acp::log::warn("session " + init_.id + ": " + e.message +
                 (placing->next < placing->hosts.size() ? "; trying the next host" : ""));
  if (placing->next < placing->hosts.size()) return try_host(std::move(placing));
  settle();
  std::string message = "no worker host of harness '" + init_.profile.name + "' could be reached:";
  for (const auto& t : placing->tried) {
    message += " " + t["host"].get<std::string>() + " (" + t["message"].get<std::string>() + ")";
    if (&t != &placing->tried.back()) message += ";";
  }
  RpcError all{rpc_code::kAdapterFailed, message,
               {{"harness", init_.profile.name}, {"reason", "unreachable"}, {"hosts", placing->tried}}};
  if (e.data.is_object() && e.data.contains("stderrTail")) all.data["stderrTail"] = e.data["stderrTail"];
  finish(std::move(all));
}

void Session::answer_early() {
  auto done = std::move(early_answer_);
  early_answer_ = nullptr;
  if (done) done(config_options());
}

void Session::ensure_adapter(Ready ready) {
  early_unused_ = false;
  if (rt_.live) rt_.live->busy(*this);
  if (!adapter_.started()) evicted_at_.clear();
  if (!front_alive_) return adapter_.ensure(std::move(ready));
  // A new worker hears from us at once: its watch starts with its first turn.
  adapter_.ensure([this, ready = std::move(ready)](Expected<void, RpcError> up) mutable {
    if (up) send_alive();
    ready(std::move(up));
  });
}

void Session::send_alive() {
  const auto& remote = init_.profile.remote;
  adapter_.notify("_harnessd/alive",
                  {{"intervalMs", remote.keepalive_interval * 1000}, {"count", remote.keepalive_count}});
}

namespace {

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
  for (const auto& e : env) {
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') {
      return e.substr(name.size() + 1);
    }
  }
  return {};
}

// What a sandboxed adapter of `profile` may write, given its environment:
// the sandbox's own paths, and for a bridge the folder where bridges keep
// their small state (harnessd's, not the workspace's).
std::vector<std::string> sandbox_writable(const harnesses::HarnessProfile& profile, const std::string& cwd,
                                          const std::vector<std::string>& adapter_env, const std::string& state_dir) {
  auto writable = adapters::writable_paths(profile.sandbox, cwd, env_value(adapter_env, "HOME"));
  if (profile.sandbox.enabled() && !harnesses::bridge_of(profile.kind).empty()) {
    writable.push_back(state_dir + "/bridges");
  }
  return writable;
}

}  // namespace

adapters::ProcessSpec adapter_process(const harnesses::HarnessProfile& profile, const std::string& cwd,
                                     const std::string& self_exe, const std::vector<std::string>& parent_env,
                                     const std::string& state_dir, const std::string& guard_exe, bool sweep_orphans,
                                     const AdapterPlace& place) {
  adapters::ProcessSpec process;
  process.guard_exe = guard_exe;
  process.sweep_orphans = sweep_orphans;
  if (profile.remote.enabled()) {
    // guard -> ssh -> (the worker host) harnessd --worker -> its adapter.
    // The cwd is the worker's, said in session/new; ssh runs anywhere.
    process.argv =
        harnesses::ssh_argv(profile.remote, place.host.empty() ? profile.remote.hosts.front() : place.host);
    process.cwd = "/";
    process.env = harnesses::adapter_environment(profile, parent_env);
    // The user's agent holds the keys ssh may need.
    if (std::string agent = env_value(parent_env, "SSH_AUTH_SOCK"); !agent.empty()) {
      process.env.push_back("SSH_AUTH_SOCK=" + agent);
    }
    return process;
  }
  process.argv = harnesses::adapter_argv(profile, self_exe);
  process.cwd = cwd;
  process.env = harnesses::adapter_environment(profile, parent_env);
  // Bridges keep their own small state (e.g. OpenCode's session ids) here.
  process.env.push_back("HARNESSD_STATE_DIR=" + state_dir);
  if (profile.sandbox.enabled()) {
    // guard -> bwrap -> adapter. Never a silent downgrade: without a
    // working bwrap (session/new refuses such sessions first) the start
    // fails on the missing program.
    const adapters::SandboxSupport& support = adapters::SandboxSupport::here();
    auto writable = sandbox_writable(profile, cwd, process.env, state_dir);
    if (!harnesses::bridge_of(profile.kind).empty()) acp::make_dirs(state_dir + "/bridges");
    // The adapter is looked up here, on its own PATH, as it would be
    // without the sandbox; bwrap gets its absolute path.
    if (auto program = adapters::find_executable(process.argv.at(0), env_value(process.env, "PATH"))) {
      process.argv[0] = *program;
    }
    // Only the private /tmp is writable for sure.
    std::erase_if(process.env, [](const std::string& e) { return e.rfind("TMPDIR=", 0) == 0; });
    process.env.push_back("TMPDIR=/tmp");
    // harnessd's state directory holds its socket, through which the
    // adapter could ask for a session without a sandbox; the runtime
    // directory holds the user's session bus and the like. Both are
    // covered when they exist (bwrap cannot make a mount point on the
    // read-only host).
    std::vector<std::string> hidden;
    const std::string runtime_dir = "/run/user/" + std::to_string(::getuid());
    for (const std::string& dir : {state_dir, env_value(process.env, "XDG_RUNTIME_DIR"), runtime_dir}) {
      if (std::find(hidden.begin(), hidden.end(), dir) != hidden.end()) continue;
      struct stat st {};
      if (!dir.empty() && dir.front() == '/' && ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        hidden.push_back(dir);
      }
    }
    process.argv = adapters::sandbox_argv(support.available() ? support.bwrap() : "bwrap", profile.sandbox, cwd,
                                          writable, hidden, process.argv);
  }
  // guard -> launcher (a container or pod runner) -> [bwrap ->] adapter.
  if (!profile.launcher.empty()) {
    process.argv = harnesses::launched_argv(profile.launcher, {cwd, place.session, profile.name}, process.argv);
  }
  return process;
}

json sandbox_report(const harnesses::HarnessProfile& profile, const std::string& cwd,
                    const std::vector<std::string>& parent_env, const std::string& state_dir) {
  if (!profile.sandbox.enabled()) return adapters::sandbox_json(profile.sandbox, {});
  auto env = harnesses::adapter_environment(profile, parent_env);
  return adapters::sandbox_json(profile.sandbox, sandbox_writable(profile, cwd, env, state_dir));
}

json Session::sandbox() const { return sandbox_report(init_.profile, init_.cwd, rt_.parent_env, rt_.store.dir()); }

adapters::AdapterOptions adapter_link_options(const Runtime& rt, const harnesses::HarnessProfile& profile,
                                              const std::string& cwd, std::string label, const AdapterPlace& place) {
  const auto& d = rt.config.daemon;
  adapters::AdapterOptions link;
  link.process = adapter_process(profile, cwd, rt.self_exe, rt.parent_env, rt.store.dir(), rt.guard_exe,
                                 rt.sweep_orphans, place);
  link.prestart = rt.prestart;
  link.label = std::move(label);
  link.max_line_bytes = d.max_line_bytes;
  link.stderr_tail_bytes = d.stderr_tail_bytes;
  link.output_gate = rt.adapter_output_gate;
  link.input_gate = rt.host_input_gate;
  link.input_high_water = d.queue_high_water;
  link.input_low_water = d.queue_low_water;
  return link;
}

adapters::AdapterSessionSpec Session::adapter_spec() const {
  const auto& d = rt_.config.daemon;
  adapters::AdapterSessionSpec spec;
  spec.link = adapter_link_options(rt_, init_.profile, init_.cwd,
                                   "session " + init_.id + (init_.host.empty() ? "" : " on " + init_.host),
                                   {init_.id, init_.host});
  spec.command = init_.profile.command;
  spec.install_hint = init_.profile.install_hint;
  spec.cwd = remote_cwd();
  spec.host = init_.host;
  spec.mcp_servers = init_.mcp_servers;
  spec.client_capabilities = relay_.adapter_client_capabilities();
  spec.config_choices = init_.config_choices;
  spec.start_timeout = d.start_timeout;
  spec.auth_env = init_.profile.auth_env;
  spec.limits = init_.profile.limits;
  return spec;
}

// ---------------------------------------------------------------- the turn

void Session::send_prompt() {
  const std::uint64_t generation = turn_->control.generation();
  const bool latched = turn_->control.activate();
  adapter_.prompt(turn_->prompt.packaging ? turn_->packaged_blocks : turn_->prompt.blocks,
                  [this, generation](acp::Connection::CallResult r) { finish_turn(generation, std::move(r)); });
  // A stop that arrived during start-up was latched; apply it now that the
  // prompt has reached the adapter.
  if (latched && turn_ && turn_->control.generation() == generation) forward_stop();
}

void Session::cancel() {
  // A cancel while idle is a no-op; it must never reach the next turn. Nor
  // does one that arrives while the host still waits for an ended turn's
  // answer: for the host, that turn is the one running.
  if (turn_ && !host_order_->waiting()) stop_turn(queue::StopReason::kCancelled);
}

bool Session::cancel_request(const json& request_id) {
  if (!turn_ || turn_->prompt.ledger.requestId != request_id) return false;
  stop_turn(queue::StopReason::kCancelled);
  return true;
}

void Session::stop_turn(queue::StopReason why) {
  switch (turn_->control.request_stop(why)) {
    case queue::StopAction::kForward:
      forward_stop();
      break;
    case queue::StopAction::kLatched:
      // A deadline or a failed recording cannot wait for a slow start-up:
      // stop it. A cancel waits and is applied once the prompt is sent.
      if (why != queue::StopReason::kCancelled) {
        adapter_.abort_start(RpcError::internal("the run was stopped while its adapter was starting"));
      }
      break;
    case queue::StopAction::kDrop:
    case queue::StopAction::kNone:
      break;
  }
}

void Session::forward_stop() {
  if (!adapter_.alive()) return;  // its exit ends the turn
  adapter_.cancel();
  const std::uint64_t generation = turn_->control.generation();
  turn_->stop_timer = std::make_unique<acp::Timer>(rt_.loop);
  turn_->stop_timer->start(rt_.config.daemon.cancel_grace, [this, generation] {
    if (!turn_ || turn_->control.generation() != generation) return;
    acp::log::warn("session " + init_.id + ": adapter did not answer the cancel in time; stopping it");
    // Retiring fails the pending session/prompt, which answers the host at
    // once; the reaper finishes the kill ladder.
    adapter_.retire();
  });
}

void Session::turn_output(std::string_view kind, std::string_view text) {
  if (!turn_) return;
  turn_->partial_output = true;
  if (kind == "agent_message_chunk" && turn_->answer.size() < kMaxAnswerBytes) turn_->answer += text;
}

void Session::usage_reported(const json& update) {
  if (turn_) {
    turn_->usage_update = update;
    turn_->usage_update.erase("sessionUpdate");
    return;
  }
  // Between turns: the session's cost so far, from which the next run's
  // share is counted.
  if (update.contains("cost") && update["cost"].is_object()) adapter_cost_ = update["cost"];
}

json Session::account(const Turn& turn, const json& reported) {
  json used = usage::of_run(reported, turn.usage_update, adapter_cost_);
  if (!init_.usage.is_object()) init_.usage = usage::empty_sum();
  usage::add(init_.usage, used);
  if (turn.usage_update.is_object() && turn.usage_update.contains("cost") && turn.usage_update["cost"].is_object()) {
    adapter_cost_ = turn.usage_update["cost"];
  }
  if (rt_.budgets) rt_.budgets->ran(init_.profile.name, usage::tokens(used));
  return used;
}

void Session::remember(const Turn& turn, const std::string& event) {
  // Only turns that ended with an answer: a failed or cancelled task is not
  // something the next one can build on.
  if (event != run_event::kCompleted) return;
  std::string answer = turn.answer;
  if (answer.size() > kMaxAnswerBytes) {
    answer.resize(acp::utf8::safe_cut(answer, kMaxAnswerBytes));
    answer += " [... answer cut at " + std::to_string(kMaxAnswerBytes) + " bytes]";
  }
  init_.history.push_back({{"task", turn.task}, {"answer", answer}, {"runId", turn.prompt.run_id}});
  while (init_.history.size() > kHistoryTurns) init_.history.erase(init_.history.begin());
}

void Session::finish_turn(std::uint64_t generation, acp::Connection::CallResult result) {
  if (!turn_ || turn_->control.generation() != generation || !turn_->control.finish()) return;
  Turn& turn = *turn_;
  updated_at_ = std::chrono::system_clock::now();
  const std::string run_id = turn.prompt.run_id;
  turn.stop_timer.reset();
  turn.deadline.reset();

  // What happened, as the ledger says it and as the host will hear it.
  TurnFacts facts;
  facts.run_id = run_id;
  facts.session_id = init_.id;
  facts.started_at = turn.started_at;
  facts.ended_at = acp::iso_time();
  facts.partial_output = turn.partial_output;
  facts.timeout = turn.prompt.timeout;
  facts.store_error = turn.error;
  facts.state_dir = rt_.store.dir();
  if (!turn.adapter_start.is_null()) facts.adapter_start = turn.adapter_start;
  if (json permissions = relay_.permissions().take_summary(); !permissions.is_null()) facts.permissions = permissions;
  facts.sandbox = sandbox();
  if (!init_.host.empty()) {
    // The worker's own run id, before the answer takes ours.
    json worker = {{"host", init_.host}};
    if (result && result->is_object()) {
      const json* meta = &*result;
      for (const char* key : {"_meta", "harnessd", "runId"}) {
        meta = meta->is_object() && meta->contains(key) ? &(*meta)[key] : nullptr;
        if (!meta) break;
      }
      if (meta && meta->is_string()) worker["runId"] = *meta;
    }
    facts.worker = std::move(worker);
  }
  // PromptResponse.usage (ACP), when the adapter answered with one.
  facts.usage = account(turn, result && result->is_object() ? result->value("usage", json()) : json());
  TurnOutcome o = turn_outcome(turn.control.stop_reason(), std::move(result), facts,
                               [this](const std::string& what) { return adapter_.failure(what); });
  const std::string event = o.event;
  std::optional<RpcError> failure = std::move(o.failure);
  // Serialised once: recorded now, sent when its turn comes.
  std::optional<std::string> answer;
  if (o.answer) {
    answer = turn.prompt.reply.result_line(*o.answer);
    turn.recorder->event("harnessd>host", std::string_view(*answer).substr(0, answer->size() - 1), true);
  }

  // result.json and the terminal ledger line are on disk before the host is
  // answered; if they cannot be written, the run failed. The answer waits
  // for that, and for the answers of earlier turns; the session does not.
  const std::uint64_t ticket = host_order_->reserve();
  // Once the run is on disk, a watch reads its frames from there.
  const std::uint64_t recorded = relay_.frames().base_known() ? relay_.frames().next_seq() - 1 : 0;
  Store::Done deliver = [this, alive = std::weak_ptr<bool>(alive_), recorded, order = host_order_, ticket, run_id,
                         reply = std::move(turn.prompt.reply), answer = std::move(answer),
                         failure = std::move(failure)](Expected<void> written) mutable {
    if (written && recorded && !alive.expired()) relay_.frames().forget_through(recorded);
    order->ready(ticket, [run_id, written = std::move(written), reply = std::move(reply), answer = std::move(answer),
                            failure = std::move(failure)]() mutable {
      if (!written) {
        acp::log::error("run " + run_id + ": " + written.error().message);
        reply.error(RpcError{rpc_code::kStoreFailed,
                             "run " + run_id + " failed: it could not be recorded (" + written.error().message + ")",
                             {{"runId", run_id}, {"reason", "store"}}});
      } else if (answer) {
        reply.send_result_line(std::move(*answer));
      } else {
        reply.error(*failure);
      }
    });
  };
  if (oneshot()) {
    // A oneshot session's memory is in its record before the host hears of
    // the turn, so a crash right after the answer loses nothing: the record
    // is queued to the database ahead of the run's terminal transition.
    remember(turn, event);
    save_record();
  }
  turn.recorder->finish(event, std::move(o.fields), std::move(o.result_file), std::move(deliver));
  // The turn is over: its end is on its way to disk, and the next prompt
  // need not wait for it (the writer keeps each run's writes in order, and
  // the answers above keep theirs).
  turn_->control.done();
  turn_.reset();
  // A oneshot adapter serves one prompt.
  if (oneshot()) {
    adapter_.retire();
  } else {
    save_record_after_turn();
    settle();
  }
  // From a fresh stack: this may run inside the adapter's answer.
  std::weak_ptr<bool> alive = alive_;
  rt_.loop.post([this, alive] {
    if (alive.expired() || closed_) return;
    if (on_idle_) on_idle_(*this);
  });
}

void Session::close(bool forget, acp::UniqueFunction<void()> answered) {
  if (closed_) {
    if (answered) answered();
    return;
  }
  // A shutdown keeps the record open; its updatedAt is brought up to date
  // if a turn's write was spared.
  if (!forget && unsaved_time_) save_record();
  closed_ = true;
  if (rt_.live) rt_.live->busy(*this);
  if (auto turn = std::move(turn_)) {
    // A running turn is ended now, as cancelled, recorded first.
    if (turn->control.finish()) {
      acp::UniqueFunction<void()> after = std::move(answered);
      answered = nullptr;
      TurnFacts facts;
      facts.run_id = turn->prompt.run_id;
      facts.session_id = init_.id;
      facts.started_at = turn->started_at;
      facts.ended_at = acp::iso_time();
      facts.partial_output = turn->partial_output;
      facts.sandbox = sandbox();
      facts.usage = account(*turn, json());
      TurnOutcome o = cancelled_outcome("session closed", facts);
      const std::uint64_t ticket = host_order_->reserve();
      turn->recorder->finish(
          o.event, std::move(o.fields), std::move(o.result_file),
          [order = host_order_, ticket, reply = std::move(turn->prompt.reply), run_id = turn->prompt.run_id,
           answer = std::move(*o.answer), after = std::move(after)](Expected<void> written) mutable {
            if (!written) acp::log::error("run " + run_id + ": " + written.error().message);
            order->ready(ticket, [reply = std::move(reply), answer = std::move(answer),
                                    after = std::move(after)]() mutable {
              reply.result(std::move(answer));
              if (after) after();
            });
          },
          /*failure_fails=*/false);
    }
  }
  answer_early();  // the session exists; a later lifetime can load it
  if (auto placing = placing_.lock()) {
    // Closed (a shutdown) while its worker was starting: session/new is
    // refused, from a fresh stack, once the session is gone.
    if (auto done = std::move(placing->done)) {
      rt_.loop.post([done = std::move(done)]() mutable {
        done(RpcError::internal("session/new: harnessd is shutting down"));
      });
    }
  }
  adapter_.drop_waiters();
  auto held = std::move(held_);
  held_.clear();
  for (auto& [key, fail] : held) {
    RpcError e = RpcError::internal("session " + init_.id + " was closed before the request was answered");
    e.data = {{"sessionId", init_.id}};
    fail(e);
  }
  if (!forget && adapter_.prompting() && adapter_.alive() && !rt_.config.daemon.worker) {
    // Shutting down mid-turn: the adapter is told (session/cancel, then
    // EOF) and has cancel_grace to read that, and any answer already
    // written to it such as a cancelled permission request, before the
    // kill ladder goes on. A worker whose front is gone has nobody to
    // wait for: its trees are stopped at once.
    adapter_.cancel();
    adapter_.retire(rt_.config.daemon.cancel_grace);
  } else {
    adapter_.retire();
  }
  if (forget) save_record();
  relay_.end_watches();
  // No turn of ours to answer. Last, so that whatever waits on it comes
  // after the record's write, and after the answers of ended turns.
  if (answered) host_order_->then(std::move(answered));
}

void Session::restore(bool replay, acp::UniqueFunction<void(Expected<json, RpcError>)> done) {
  done = held(std::move(done));
  auto finish = [this](acp::UniqueFunction<void(Expected<json, RpcError>)> cb, std::size_t replayed) mutable {
    const json& restored = adapter_.restore_outcome();
    if (adapter_.ready()) {
      json outcome = restored.is_null() ? json{{"restored", true}, {"live", true}} : restored;
      cb(json{{"adapter", outcome}, {"replayed", replayed}});
      return;
    }
    std::weak_ptr<bool> alive = alive_;
    ensure_adapter([this, alive, cb = std::move(cb), replayed](Expected<void, RpcError> ready) mutable {
      if (alive.expired()) return;
      json outcome;
      if (!ready) {
        outcome = {{"restored", false}, {"reason", "the adapter could not start: " + ready.error().message}};
      } else if (adapter_.restore_outcome().is_null()) {
        outcome = {{"restored", false}, {"reason", "no adapter session was recorded for this session"}};
      } else {
        outcome = adapter_.restore_outcome();
      }
      cb(json{{"adapter", outcome}, {"replayed", replayed}});
    });
  };
  if (!replay) {
    finish(std::move(done), 0);
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  rt_.store.read_transcript(
      init_.id, [this, alive, finish, done = std::move(done)](Expected<transcript::Expanded> content) mutable {
        if (alive.expired()) return;
        if (!content) {
          done(RpcError::internal("cannot read the transcript: " + content.error().message));
          return;
        }
        std::size_t replayed = relay_.replay(*content);
        finish(std::move(done), replayed);
      });
}

}  // namespace harnessd::worker
