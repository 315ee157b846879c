// fuzz_state: the state-file readers. The input is ledger.jsonl, then a NUL
// byte, then a session record (sessions/<id>.json). They are read by the
// ledger reader and index, `harnessd runs` and `harnessd sessions`, the
// store's recovery at start-up, and the agent's session/load and
// session/resume, which bring the record back.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "worker/inspect.h"
#include "worker/ledger.h"

namespace {

using nlohmann::json;
using namespace harnessd;

constexpr const char* kSessionId = "sess_fuzz-1";

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_stdout();  // `harnessd runs` and `harnessd sessions` print on stdout.
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(bytes), size);
  std::size_t nul = input.find('\0');
  std::string_view ledger = input.substr(0, nul);
  std::string_view record = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);

  // Two copies: the daemon below rewrites its directory (recovery, the
  // session's close), the commands read the other one as it was written.
  const std::string dir = fuzz::scratch_dir() + "/state";
  const std::string copy = fuzz::scratch_dir() + "/state-read";
  for (const std::string& d : {dir, copy}) {
    fuzz::reset_dir(d);
    fuzz::reset_dir(d + "/sessions");
    fuzz::write_file(d + "/ledger.jsonl", ledger);
    if (nul != std::string_view::npos) fuzz::write_file(d + "/sessions/" + kSessionId + ".json", record);
  }

  // The ledger reader and the run index; an entry read back from its own
  // line is the same entry.
  worker::RunIndex index;
  for (const json& line : worker::read_jsonl(dir + "/ledger.jsonl").lines) {
    auto entry = worker::LedgerEntry::from_json(line);
    if (!entry) continue;
    json written = entry->to_json();
    auto again = worker::LedgerEntry::from_json(written);
    if (!again || again->to_json() != written) fuzz::fail("a ledger entry does not survive its own line: " + written.dump());
    index.apply(*entry);
  }
  std::vector<std::string> run_ids;
  for (const auto& [id, run] : index.runs()) {
    (void)run.to_json().dump(-1, ' ', false, json::error_handler_t::replace);
    if (run_ids.size() < 3) run_ids.push_back(id);
  }

  // A daemon starting on the directory (recovery), asked about the session
  // and its runs.
  std::vector<std::string> requests = {
      R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":1}})",
      R"({"jsonrpc":"2.0","id":1,"method":"session/list","params":{}})",
      R"({"jsonrpc":"2.0","id":2,"method":"_harnessd/sessions/list","params":{}})",
      R"({"jsonrpc":"2.0","id":3,"method":"_harnessd/runs/list","params":{}})",
      R"({"jsonrpc":"2.0","id":4,"method":"session/resume","params":{"sessionId":"sess_fuzz-1","cwd":"/"}})",
      R"({"jsonrpc":"2.0","id":5,"method":"session/set_config_option","params":{"sessionId":"sess_fuzz-1","configId":"model","value":"x"}})",
      R"({"jsonrpc":"2.0","id":6,"method":"session/prompt","params":{"sessionId":"sess_fuzz-1","prompt":[{"type":"text","text":"go"}]}})",
      R"({"jsonrpc":"2.0","id":7,"method":"session/close","params":{"sessionId":"sess_fuzz-1"}})",
      R"({"jsonrpc":"2.0","id":8,"method":"session/load","params":{"sessionId":"sess_fuzz-1","cwd":"/","mcpServers":[]}})",
  };
  int next = 9;
  for (const std::string& run : run_ids) {
    requests.push_back(json({{"jsonrpc", "2.0"}, {"id", next++}, {"method", "_harnessd/runs/get"}, {"params", {{"runId", run}}}})
                           .dump(-1, ' ', false, json::error_handler_t::replace));
  }
  std::vector<std::string_view> lines(requests.begin(), requests.end());
  auto out = fuzz::run_engine(lines, dir);
  fuzz::check_answers(lines, out);

  // The commands that read the directory without a daemon.
  (void)worker::read_session_records(copy);
  worker::sessions_command(copy, "json", true);
  worker::sessions_command(copy, "text", true);
  worker::runs_command(worker::RunsQuery{copy, std::nullopt, std::nullopt, false, false, "json"});
  worker::runs_command(worker::RunsQuery{copy, std::string(kSessionId), std::nullopt, false, false, "text"});
  worker::runs_command(worker::RunsQuery{copy, std::nullopt, std::nullopt, false, true, "json"});
  return 0;
}
