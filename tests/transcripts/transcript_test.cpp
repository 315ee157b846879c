// Transcript tests: each tests/transcripts/*.jsonl file is a conversation
// with the real harnessd binary. Lines starting with '>' are sent as they
// are; lines starting with '<' are the next message expected, compared as
// JSON values. In expectations the string "$ANY" matches any value and
// "$name" captures a value on first use and must match it afterwards; in
// sent lines "$name" is replaced by the captured value. '#' starts a comment.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

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

void run_transcript(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  Daemon d;
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
      d.send_raw(body + "\n");
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

}  // namespace

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
