// Handlers of the ACP methods harnessd serves to its host.
#include "worker/agent.h"

#include <algorithm>
#include <sys/stat.h>

#include <ctime>
#include <deque>
#include <functional>
#include <memory>

#include "acp/files.h"
#include "acp/log.h"
#include "adapters/process.h"
#include "harnessd_version.h"
#include "queue/ids.h"
#include "schema/acp.h"
#include "worker/ledger.h"
#include "worker/run_recorder.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Images: a packaged prompt lists them as files; otherwise they go to the
// adapter as sent.
const schema::PromptCapabilities kPromptCapabilities{true, false, true};

}  // namespace

json agent_capabilities(const Config& config) {
  json harnesses = json::array();
  for (const auto& [name, profile] : config.harnesses) harnesses.push_back(name);
  // harnessd's own extensions, for hosts that look for them.
  json ours = {{"version", HARNESSD_VERSION},
               {"methods",
                {"_harnessd/sessions/list", "_harnessd/sessions/set_summary", "_harnessd/sessions/watch",
                 "_harnessd/sessions/unwatch", "_harnessd/status", "_harnessd/runs/wait", "_harnessd/runs/cancel", "_harnessd/runs/get",
                 "_harnessd/runs/list"}},
               {"notifications", {"$/cancel_request"}},
               {"meta", {"harness", "name", "hostSession", "ensure", "lane", "timeoutMs", "mode", "template", "context",
                         "permissions", "sandbox"}},
               {"harnesses", harnesses},
               {"defaultHarness", config.daemon.default_harness}};
  return {{"loadSession", true},
          {"_meta", {{"harnessd", ours}}},
          {"promptCapabilities",
           {{"image", kPromptCapabilities.image},
            {"audio", kPromptCapabilities.audio},
            {"embeddedContext", kPromptCapabilities.embeddedContext}}},
          {"mcpCapabilities", {{"http", false}, {"sse", false}}},
          {"sessionCapabilities", {{"list", json::object()}, {"close", json::object()}, {"resume", json::object()}}}};
}

Agent::Agent(Runtime& rt)
    : rt_(rt),
      scheduler_(queue::SchedulerOptions{rt.config.daemon.max_concurrent_runs, rt.config.daemon.max_queue_depth, {4, 2, 1}}) {
  acp::Connection& c = rt_.host;
  // Once close_all ran no session is opened: session/new, load and resume
  // are refused before their params are read.
  auto unless_closing = [this](std::string method, auto decode) {
    return [this, method = std::move(method), decode](const json& p) -> decltype(decode(p)) {
      if (closing_) return shutting_down(method);
      return decode(p);
    };
  };
  // The decoders that report the method they decode for.
  auto session_ref = [](std::string method) {
    return [method = std::move(method)](const json& p) { return schema::decode_session_ref(method, p); };
  };
  auto load = [&](std::string method) {
    return unless_closing(method, [method](const json& p) { return schema::decode_load_session(method, p); });
  };
  c.bind<schema::InitializeRequest>("initialize", schema::decode_initialize,
                                    std::bind_front(&Agent::on_initialize, this));
  c.bind<schema::NewSessionRequest>("session/new", unless_closing("session/new", schema::decode_new_session),
                                    std::bind_front(&Agent::on_new_session, this));
  // A prompt's blocks are checked against the promptCapabilities we
  // advertise; the run's record keeps the params as received.
  c.bind<PromptParams>(
      "session/prompt",
      [](json& p) -> Expected<PromptParams, RpcError> {
        auto req = schema::decode_prompt(p, kPromptCapabilities);
        if (!req) return req.error();
        return PromptParams{std::move(*req), std::move(p)};
      },
      std::bind_front(&Agent::on_prompt, this));
  c.bind<schema::SessionRef>("session/close", session_ref("session/close"), std::bind_front(&Agent::on_close, this));
  c.bind<schema::LoadSessionRequest>("session/load", load("session/load"),
                                     std::bind_front(&Agent::on_load, this, true));
  c.bind<schema::LoadSessionRequest>("session/resume", load("session/resume"),
                                     std::bind_front(&Agent::on_load, this, false));
  c.bind<schema::SetConfigOptionRequest>("session/set_config_option", schema::decode_set_config_option,
                                         std::bind_front(&Agent::on_set_config_option, this));
  c.bind<schema::SetModeRequest>("session/set_mode", schema::decode_set_mode,
                                 std::bind_front(&Agent::on_set_mode, this));
  c.bind<schema::SetSummaryRequest>("_harnessd/sessions/set_summary", schema::decode_set_summary,
                                    std::bind_front(&Agent::on_set_summary, this));
  c.bind<schema::WatchRequest>("_harnessd/sessions/watch", unless_closing("_harnessd/sessions/watch", schema::decode_watch),
                               std::bind_front(&Agent::on_watch, this));
  c.bind<json>("_harnessd/sessions/unwatch", schema::decode_unwatch, std::bind_front(&Agent::on_unwatch, this));
  c.bind<std::string>(
      "_harnessd/runs/cancel", [](const json& p) { return schema::decode_run_ref("_harnessd/runs/cancel", p); },
      std::bind_front(&Agent::on_cancel_run, this));
  c.bind_notification<schema::SessionRef>("session/cancel", session_ref("session/cancel"),
                                          std::bind_front(&Agent::on_cancel, this));
  c.bind_notification<schema::CancelRequest>("$/cancel_request", schema::decode_cancel_request,
                                             std::bind_front(&Agent::on_cancel_request, this));
  c.on_notification("_harnessd/alive", [this](const json& params) { on_front_alive(params); });
}

void Agent::on_front_alive(const json& params) {
  // Only a worker watches: it has no one to wait for once its front (or
  // the link to it) is gone, and a dead TCP link under steady output is
  // not always noticed by sshd's own keep-alives.
  if (!rt_.config.daemon.worker || !rt_.end_input) return;
  auto number = [&](const char* key, std::int64_t fallback, std::int64_t lo, std::int64_t hi) {
    std::int64_t v = fallback;
    if (params.is_object() && params.contains(key) && params[key].is_number_integer()) v = params[key].get<std::int64_t>();
    return std::clamp(v, lo, hi);
  };
  const std::int64_t interval = number("intervalMs", 5000, 100, 3600000);
  const std::int64_t count = number("count", 3, 1, 100);
  const auto bound = std::chrono::milliseconds(interval * (count + 1));
  if (!front_watch_) {
    front_watch_ = std::make_unique<acp::Timer>(rt_.loop);
    acp::log::debug("the front says it is alive every " + std::to_string(interval) + " ms");
  }
  front_watch_->start(bound, [this, bound] {
    acp::log::warn("the front sent nothing for " + std::to_string(bound.count()) +
                   " ms: it, or the link to it, is gone; stopping");
    rt_.end_input("front silent");
  });
  // The watch never keeps a stopping worker alive.
  front_watch_->unref();
}

Agent::~Agent() {
  rt_.host.clear_handlers();
  close_all();
}

void Agent::close_all(acp::UniqueFunction<void()> answered, bool for_good) {
  // A session/new or load read after this point would open a session that
  // nothing closes (and, for `harnessd run`, leave its record open).
  closing_ = true;
  std::vector<std::string> ids;
  registry_.for_each_open([&](const std::string& id, const auto&, const Session&) { ids.push_back(id); });
  // One count for each session, and one so that `answered` runs only after
  // every session has been asked to close.
  struct Left {
    std::size_t n;
    acp::UniqueFunction<void()> fn;
    void one() {
      if (--n == 0 && fn) fn();
    }
  };
  auto left = std::make_shared<Left>(Left{ids.size() + 1, std::move(answered)});
  for (const auto& id : ids) close_session(id, "shutting down", for_good, [left] { left->one(); });
  left->one();
}

namespace {

// Answers a closed session's queued prompts one after the other, after its
// running prompt: a host hears them in the order it sent them.
struct CancelChain : std::enable_shared_from_this<CancelChain> {
  std::deque<QueuedPrompt> left;
  acp::UniqueFunction<void()> done;
  void next() {
    if (left.empty()) {
      if (done) done();
      return;
    }
    QueuedPrompt q = std::move(left.front());
    left.pop_front();
    answer_cancelled(std::move(q), [self = shared_from_this()] { self->next(); });
  }
};

}  // namespace

void Agent::close_session(const std::string& id, const std::string& why, bool forget,
                          acp::UniqueFunction<void()> answered) {
  Session* session = registry_.find(id);
  if (!session) {
    if (answered) answered();
    return;
  }
  // Drop the queue first: it frees the session's slot, and the session's
  // own close() does not report back.
  std::vector<QueuedPrompt> queued = scheduler_.drop(id);
  auto chain = std::make_shared<CancelChain>();
  for (auto& q : queued) chain->left.push_back(std::move(q));
  chain->done = std::move(answered);
  session->close(forget, [chain] { chain->next(); });
  std::unique_ptr<Session> closed = registry_.close(id);
  rt_.store.release_session(id);
  acp::log::info("session " + id + ": closed (" + why + ")");
  closed.reset();
  pump();
}

void Agent::prepare_next(const std::string& session) {
  // The next prompt of a busy session gets its run folder while the current
  // turn runs, so the hand-off does not wait for the disk; deeper queues are
  // prepared as they move up.
  if (!scheduler_.active(session)) return;
  // A prompt to package waits for its turn: its history is not known yet.
  if (QueuedPrompt* next = scheduler_.front(session); next && !next->packaging) prepare_run(*next);
}

void Agent::pump() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    while (auto next = scheduler_.next()) {
      Session* session = registry_.find(next->session);
      if (!session) {  // closed meanwhile: cannot happen, drop() removes its queue
        answer_cancelled(std::move(next->item));
        scheduler_.finished(next->session);
        continue;
      }
      session->start_turn(std::move(next->item));
      prepare_next(next->session);
    }
  } while (pump_again_);
  pumping_ = false;
}

void Agent::on_initialize(schema::InitializeRequest req, acp::Reply reply) {
  rt_.client_capabilities = std::move(req.clientCapabilities);
  // ACP "Initialization": answer the one version we speak, whatever was asked.
  reply.result({{"protocolVersion", schema::kProtocolVersion},
                {"agentCapabilities", agent_capabilities(rt_.config)},
                {"authMethods", json::array()},
                {"agentInfo", {{"name", "harnessd"}, {"title", "harnessd"}, {"version", HARNESSD_VERSION}}}});
  rt_.host.mark_initialized();
  // Adapters warm from now on: they are offered what the host offers.
  for (auto& [name, pool] : rt_.warm) pool->fill();
}

void Agent::on_prompt(PromptParams params, acp::Reply reply) {
  schema::PromptRequest& req = params.req;
  Session* session = registry_.find(req.sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req.sessionId));
  // Packaging: the prompt's template, else the session's; a oneshot
  // session or a context with neither uses single-shot.
  auto packaging = prompt_template(*session, req.harnessd);
  if (!packaging) return reply.error(packaging.error());
  if (!scheduler_.can_enqueue(session->id())) {
    std::size_t depth = rt_.config.daemon.max_queue_depth;
    RpcError e{rpc_code::kQueueFull,
               "session " + session->id() + " already has " + std::to_string(depth) + " prompts waiting; retry later",
               {{"sessionId", session->id()}, {"queueDepth", depth}, {"retryable", true}}};
    return reply.error(e);
  }
  // A spent budget of the harness refuses the prompt before it is a run
  // (issue 17); the host retries after data.retryAfterMs.
  const harnesses::HarnessProfile& profile = session->profile();
  if (rt_.budgets) {
    if (auto refused = rt_.budgets->check(profile.name, {profile.max_runs_per_hour, profile.max_tokens_per_day})) {
      refused->data["sessionId"] = session->id();
      return reply.error(*refused);
    }
  }
  QueuedPrompt prompt;
  prompt.run_id = queue::make_id("run_");
  prompt.request = {{"id", reply.id()},
                    {"method", "session/prompt"},
                    {"params", std::move(params.received)},
                    {"receivedAt", acp::iso_time()}};
  prompt.blocks = std::move(req.prompt);
  prompt.ledger.runId = prompt.run_id;
  prompt.ledger.sessionId = session->id();
  prompt.ledger.name = session->name();
  prompt.ledger.hostSession = session->init().host_session;
  prompt.ledger.harness = session->profile().name;
  prompt.ledger.requestId = reply.id();
  prompt.reply = std::move(reply);
  LedgerEntry queued = prompt.ledger;
  queued.event = run_event::kQueued;
  rt_.store.record(std::move(queued));
  if (rt_.budgets) rt_.budgets->queued(profile.name);
  prompt.recorder = std::make_unique<RunRecorder>(
      rt_.store, prompt.ledger,
      RunRecorder::Policy{rt_.config.daemon.max_recording_bytes, session->profile().record_metadata_only},
      session->take_run_tag());
  const auto& meta = req.harnessd;
  prompt.packaging = std::move(*packaging);
  prompt.context = meta.context;
  prompt.timeout = meta.timeoutMs ? std::chrono::milliseconds(*meta.timeoutMs) : session->init().run_timeout;
  queue::Lane lane = meta.lane ? *queue::parse_lane(*meta.lane) : session->init().lane;
  // [harness.X] max_concurrent: its sessions share that many slots.
  scheduler_.enqueue(session->id(), lane, std::move(prompt), profile.name, profile.max_concurrent);
  pump();
  prepare_next(session->id());
}

void Agent::on_cancel(schema::SessionRef req) {
  Session* session = registry_.find(req.sessionId);
  if (!session) {
    acp::log::warn("ignored session/cancel for unknown session " + req.sessionId);
    return;
  }
  session->cancel();
}

void Agent::on_cancel_run(std::string run_id, acp::Reply reply) {
  // Queued: it leaves the queue, answered cancelled.
  auto removed = scheduler_.remove_if([&](const QueuedPrompt& q) { return q.run_id == run_id; });
  if (removed) {
    acp::log::info("session " + removed->first + ": queued run " + run_id + " cancelled");
    answer_cancelled(std::move(removed->second));
    return reply.result({{"cancelled", true}, {"was", "queued"}});
  }
  // Running: cancelled like session/cancel.
  Session* running = nullptr;
  registry_.for_each_open([&](const std::string&, const auto&, Session& s) {
    if (s.active_run_id() == run_id) running = &s;
  });
  if (running) {
    running->cancel();
    return reply.result({{"cancelled", true}, {"was", "running"}});
  }
  std::optional<RunRecord> run = rt_.store.find_run(run_id);
  if (!run) return reply.error(RpcError{rpc_code::kResourceNotFound, "Run not found: " + run_id, {{"runId", run_id}}});
  // Ended, or another process's: nothing of it runs here.
  reply.result({{"cancelled", false}, {"state", run->state}});
}

void Agent::on_cancel_request(schema::CancelRequest req) {
  // A queued prompt leaves the queue and is answered at once ...
  auto removed = scheduler_.remove_if([&](const QueuedPrompt& q) { return q.reply.id() == req.requestId; });
  if (removed) {
    acp::log::info("session " + removed->first + ": queued request " + req.requestId.dump() + " cancelled");
    answer_cancelled(std::move(removed->second));
    return;
  }
  // ... a running one is cancelled like session/cancel.
  bool found = false;
  registry_.for_each_open([&](const std::string&, const auto&, Session& s) {
    if (!found) found = s.cancel_request(req.requestId);
  });
  if (!found) acp::log::debug("$/cancel_request for " + req.requestId.dump() + ": no such prompt");
}

RpcError Agent::template_error(const std::string& method, const std::string& problem) const {
  RpcError e = RpcError::invalid_params(method + ": _meta.harnessd.template: " + problem);
  e.data = {{"method", method},
            {"field", "_meta.harnessd.template"},
            {"builtin", harnesses::builtin_template_names()},
            {"templateDir", rt_.config.daemon.template_dir}};
  return e;
}

Expected<std::optional<harnesses::Template>, RpcError> Agent::prompt_template(const Session& session,
                                                                              const schema::HarnessdMeta& meta) {
  std::string name = meta.templateName.value_or(session.init().template_name);
  if (name.empty() && (session.oneshot() || !meta.context.is_null())) name = "single-shot";
  if (name.empty()) return std::optional<harnesses::Template>{};
  auto tmpl = harnesses::load_template(name, rt_.config.daemon.template_dir);
  if (!tmpl) return template_error("session/prompt", tmpl.error().message);
  return std::optional<harnesses::Template>(std::move(*tmpl));
}

void Agent::on_set_config_option(schema::SetConfigOptionRequest req, acp::Reply reply) {
  Session* session = registry_.find(req.sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req.sessionId));
  if (req.configId != "harness") {
    // The adapter's own options (model, mode, ...) pass through.
    session->set_adapter_option(req.configId, req.value,
                                [reply = std::move(reply)](Expected<json, RpcError> options) mutable {
                                  if (!options) return reply.error(options.error());
                                  reply.result({{"configOptions", std::move(*options)}});
                                });
    return;
  }
  auto bad_value = [&](const std::string& problem) {
    RpcError e = RpcError::invalid_params("session/set_config_option: value " + problem);
    e.data = {{"method", "session/set_config_option"}, {"field", "value"}};
    return e;
  };
  if (!req.value.is_string()) return reply.error(bad_value("must be a harness name"));
  auto profile = rt_.config.harnesses.find(req.value.get<std::string>());
  if (profile == rt_.config.harnesses.end()) {
    return reply.error(bad_value("names unknown harness '" + req.value.get<std::string>() + "'"));
  }
  // The sandbox the session chose goes with it to the new harness.
  harnesses::HarnessProfile effective = profile->second;
  effective.sandbox = adapters::tightened(effective.sandbox, session->init().sandbox_choice);
  if (auto bad = check_harness(rt_, profile->first, effective)) return reply.error(*bad);
  auto changed = session->set_harness(profile->second);
  if (!changed) return reply.error(changed.error());
  acp::log::info("session " + session->id() + ": harness is now '" + profile->first + "'");
  reply.result({{"configOptions", session->config_options()}});
}

void Agent::on_set_mode(schema::SetModeRequest req, acp::Reply reply) {
  Session* session = registry_.find(req.sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req.sessionId));
  session->set_mode(req.modeId, [reply = std::move(reply)](Expected<void, RpcError> r) mutable {
    if (!r) return reply.error(r.error());
    reply.result(json::object());
  });
}

void Agent::on_set_summary(schema::SetSummaryRequest req, acp::Reply reply) {
  if (Session* session = registry_.find(req.sessionId)) {
    session->set_summary(std::move(req.summary));
  } else if (auto record = stored_record(req.sessionId)) {
    record->summary = req.summary.empty() ? std::nullopt : std::optional<std::string>(req.summary);
    record->updated_at = acp::iso_time();
    rt_.store.save_session(record->to_json());
  } else {
    return reply.error(RpcError::session_not_found(req.sessionId));
  }
  // Answered once the record holding it is on disk.
  rt_.store.barrier(req.sessionId, [reply = std::move(reply)](Expected<void> r) mutable {
    if (!r) return reply.error(RpcError{rpc_code::kStoreFailed, "the summary could not be saved: " + r.error().message, {}});
    reply.result(json::object());
  });
}

}  // namespace harnessd::worker
