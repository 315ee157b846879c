// Transcript tests: each tests/transcripts/*.jsonl file is a conversation
// with the real harnessd binary. Lines starting with '>' are sent as they
// are; lines starting with '<' are the next message expected, compared as
// JSON values. In expectations the string "$ANY" matches any value and
// "$name" captures a value on first use and must match it afterwards; in
// sent lines "$name" is replaced by the captured value. '#' starts a comment;
// a first line "#args ..." gives harnessd extra command-line arguments.
// Sent lines may use two generators for inputs too large or too raw to
// write out: "$repeat<N>(TEXT)" is TEXT N times (TEXT holds no ')') and
// "$byte<HH>" is the byte with that hex value.
//
// Adapter transcripts (*.cases) script the adapter instead: see
// run_adapter_cases below.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

bool is_variable(const json& v) {
  return v.is_string() && std::regex_match(v.get<std::string>(), std::regex("\\$[a-z_][a-z0-9_]*"));
}

// Empty string when `actual` matches `expected`, else where it differs.
std::string match(const json& expected, const json& actual, std::map<std::string, json>& vars,
                  const std::string& path) {
  if (expected == "$ANY") return "";
  if (is_variable(expected)) {
    auto [it, fresh] = vars.emplace(expected.get<std::string>(), actual);
    if (fresh || it->second == actual) return "";
    return path + ": " + expected.get<std::string>() + " was " + it->second.dump() + ", got " + actual.dump();
  }
  if (expected.is_object() && actual.is_object()) {
    for (auto& [k, v] : expected.items()) {
      if (!actual.contains(k)) return path + "." + k + ": missing";
      if (auto e = match(v, actual[k], vars, path + "." + k); !e.empty()) return e;
    }
    for (auto& [k, v] : actual.items()) {
      if (!expected.contains(k)) return path + "." + k + ": unexpected " + v.dump();
    }
    return "";
  }
  if (expected.is_array() && actual.is_array() && expected.size() == actual.size()) {
    for (std::size_t i = 0; i < expected.size(); ++i) {
      if (auto e = match(expected[i], actual[i], vars, path + "[" + std::to_string(i) + "]"); !e.empty()) return e;
    }
    return "";
  }
  return expected == actual ? "" : path + ": expected " + expected.dump() + ", got " + actual.dump();
}

std::string expand(const std::string& line) {
  static const std::regex generator(R"(\$repeat<([0-9]+)>\(([^)]*)\)|\$byte<([0-9a-fA-F]{2})>)");
  std::string out;
  auto begin = std::sregex_iterator(line.begin(), line.end(), generator);
  std::size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    out.append(line, last, static_cast<std::size_t>(m.position()) - last);
    if (m[1].matched) {
      for (long n = std::stol(m[1].str()); n > 0; --n) out += m[2].str();
    } else {
      out.push_back(static_cast<char>(std::stoi(m[3].str(), nullptr, 16)));
    }
    last = static_cast<std::size_t>(m.position() + m.length());
  }
  out.append(line, last, std::string::npos);
  return out;
}

// The words after "#args" on the first line, if it has them.
std::vector<std::string> header_args(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::string first;
  std::getline(in, first);
  std::vector<std::string> args;
  if (first.rfind("#args ", 0) != 0) return args;
  std::istringstream words(first.substr(6));
  for (std::string w; words >> w;) args.push_back(w);
  return args;
}

void run_transcript(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  Daemon d(fake_config(), header_args(file));
  std::map<std::string, json> vars;
  std::string line;
  int number = 0, expectations = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    std::string body = line.size() > 2 ? line.substr(2) : "";
    INFO(file << ":" << number << ": " << line);
    if (line[0] == '>') {
      for (const auto& [name, value] : vars) {
        std::string quoted = "\"" + name + "\"";
        for (auto pos = body.find(quoted); pos != std::string::npos; pos = body.find(quoted)) {
          body.replace(pos, quoted.size(), value.dump());
        }
      }
      d.send_raw(expand(body) + "\n");
    } else if (line[0] == '<') {
      json expected = json::parse(body);
      auto actual = d.recv(5s);
      INFO("stderr:\n" << d.stderr_text());
      REQUIRE(actual.has_value());
      std::string diff = match(expected, *actual, vars, "$");
      INFO("got " << actual->dump());
      CHECK(diff == "");
      ++expectations;
    } else {
      FAIL("a transcript line must start with '>', '<' or '#'");
    }
  }
  CHECK(expectations > 0);
  d.close_stdin();
  CHECK(d.quiet_for(200ms));  // nothing unexpected after the last expectation
  CHECK(d.wait_exit() == 0);
}

// An adapter transcript: each case ("## title") scripts what the fake
// adapter writes for one prompt, in a single write ("A" lines, generators
// allowed, "$SESSION" and "$ID" filled in by the adapter), then lists the
// session/update objects the host must receive ("H", each compared with
// the next relayed params.update) and the prompt's answer ("R", compared
// with the response's result or error member). A case without an answer
// line of its own gets a plain end_turn answer; without "R" it expects a
// completed end_turn. After the last case the session must still serve.
struct AdapterCase {
  std::string title;
  std::vector<std::string> lines;
  std::vector<json> updates;
  json answer;
};

std::vector<AdapterCase> read_cases(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  std::vector<AdapterCase> cases;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    INFO(file << ":" << number << ": " << line);
    if (line.rfind("## ", 0) == 0) {
      cases.push_back({line.substr(3), {}, {}, nullptr});
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    REQUIRE(!cases.empty());
    REQUIRE(line.size() > 2);
    std::string body = line.substr(2);
    if (line[0] == 'A') {
      cases.back().lines.push_back(expand(body));
    } else if (line[0] == 'H') {
      cases.back().updates.push_back(json::parse(body));
    } else if (line[0] == 'R') {
      cases.back().answer = json::parse(body);
    } else {
      FAIL("an adapter case line must start with '## ', 'A', 'H', 'R' or '#'");
    }
  }
  return cases;
}

void run_adapter_cases(const std::string& file) {
  auto cases = read_cases(file);
  REQUIRE(!cases.empty());
  Daemon d(fake_config(), header_args(file));
  TempDir scripts;
  d.initialize();
  std::string sid = d.new_session();
  int n = 0;
  for (const auto& c : cases) {
    INFO("case: " << c.title);
    std::string script;
    bool answers = false;
    for (const auto& l : c.lines) {
      script += l + "\n";
      answers = answers || l.find("\"id\":$ID") != std::string::npos;
    }
    if (!answers) script += R"({"jsonrpc":"2.0","id":$ID,"result":{"stopReason":"end_turn"}})" "\n";
    std::string path = scripts.write("case" + std::to_string(++n), script);
    int id = d.send_prompt(sid, "script " + path);
    std::vector<json> seen;
    json reply = d.recv_reply(id, &seen);
    INFO("stderr:\n" << d.stderr_text());
    std::vector<json> updates;
    for (const auto& m : seen) {
      if (m.value("method", "") == "session/update") updates.push_back(m["params"]["update"]);
    }
    std::map<std::string, json> vars;
    REQUIRE(updates.size() == c.updates.size());
    for (std::size_t i = 0; i < updates.size(); ++i) {
      INFO("update " << i << ": " << updates[i].dump());
      CHECK(match(c.updates[i], updates[i], vars, "$") == "");
    }
    json expected = c.answer.is_null() ? json{{"result", {{"stopReason", "end_turn"}, {"_meta", "$ANY"}}}} : c.answer;
    json actual = reply;
    actual.erase("jsonrpc");
    actual.erase("id");
    INFO("answer: " << actual.dump());
    CHECK(match(expected, actual, vars, "$") == "");
  }
  std::vector<json> updates;
  json last = d.prompt(sid, "echo still serving", &updates);
  CHECK(last["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "still serving");
  d.close_stdin();
  CHECK(d.wait_exit() == 0);
}

}  // namespace

TEST_CASE("adapter transcripts") {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(std::string(TESTS_DIR) + "/transcripts")) {
    if (e.path().extension() == ".cases") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(!files.empty());
  for (const auto& f : files) {
    DYNAMIC_SECTION(std::filesystem::path(f).filename().string()) { run_adapter_cases(f); }
  }
}

TEST_CASE("transcripts") {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(std::string(TESTS_DIR) + "/transcripts")) {
    if (e.path().extension() == ".jsonl") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 2);
  for (const auto& f : files) {
    DYNAMIC_SECTION(std::filesystem::path(f).filename().string()) { run_transcript(f); }
  }
}
