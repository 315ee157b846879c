// What bounding the JSON parse costs per line, side by side with nlohmann's
// plain parse, on the lines harnessd relays most (message chunks and tool
// calls from an adapter), and what writing them costs with harnessd's
// writer beside nlohmann's dump(). Prints ns per line and the ratios.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/json_write.h"
#include "acp/utf8.h"
#include "schema/json_parse.h"

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double ns_per_line(const std::vector<std::string>& lines, int rounds, F&& f) {
  std::size_t sink = 0;
  auto start = Clock::now();
  for (int r = 0; r < rounds; ++r) {
    for (const auto& l : lines) sink += f(l);
  }
  auto ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  if (sink == 42) std::puts("");  // keep the work
  return ns / (static_cast<double>(rounds) * static_cast<double>(lines.size()));
}

}  // namespace

int main() {
  std::vector<std::string> lines;
  for (int i = 0; i < 100; ++i) {
    lines.push_back(R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_01jabcdefghijk","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"chunk )" +
                    std::to_string(i) + R"( of the answer, a few words long"}}}})");
    lines.push_back(R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_01jabcdefghijk","update":{"sessionUpdate":"tool_call","toolCallId":"call_)" +
                    std::to_string(i) +
                    R"(","title":"Run the tests","kind":"execute","status":"pending","rawInput":{"command":"make test","args":["-j2","--keep-going"],"env":{"CI":"1"}},"locations":[{"path":"/src/a.cpp","line":12}]}}})");
  }
  const int rounds = 2000;
  // Interleaved twice so that a noisy neighbour hits both sides alike.
  double plain = 0, bounded = 0, accept = 0, accept_bounded = 0;
  for (int pass = 0; pass < 2; ++pass) {
    plain += ns_per_line(lines, rounds, [](const std::string& l) { return nlohmann::json::parse(l).size(); });
    bounded += ns_per_line(lines, rounds, [](const std::string& l) { return harnessd::schema::parse_json(l)->size(); });
    accept += ns_per_line(lines, rounds, [](const std::string& l) { return std::size_t(nlohmann::json::accept(l)); });
    accept_bounded +=
        ns_per_line(lines, rounds, [](const std::string& l) { return std::size_t(harnessd::schema::accept_json(l)); });
  }
  std::printf("parse an adapter line: nlohmann %.0f ns, bounded %.0f ns (x%.2f)\n", plain / 2, bounded / 2,
              bounded / plain);
  std::printf("validate a line:       nlohmann %.0f ns, bounded %.0f ns (x%.2f)\n", accept / 2, accept_bounded / 2,
              accept_bounded / accept);

  // Writing: a parsed line back to text, and a line's text as a JSON string
  // (how a file's content is stored in a segment line).
  std::vector<nlohmann::json> parsed;
  for (const auto& l : lines) parsed.push_back(nlohmann::json::parse(l));
  auto dump_ns = [&](auto&& f) {
    std::size_t sink = 0;
    auto start = Clock::now();
    for (int r = 0; r < rounds; ++r) {
      for (const auto& j : parsed) sink += f(j);
    }
    auto ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
    if (sink == 42) std::puts("");
    return ns / (static_cast<double>(rounds) * static_cast<double>(parsed.size()));
  };
  double dumped = 0, written = 0, quoted = 0, escaped = 0;
  for (int pass = 0; pass < 2; ++pass) {
    dumped += dump_ns([](const nlohmann::json& j) {
      return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
    });
    written += dump_ns([](const nlohmann::json& j) {
      std::string out;
      harnessd::acp::append_json(out, j);
      return out.size();
    });
    quoted += ns_per_line(lines, rounds, [](const std::string& l) {
      return nlohmann::json(l).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
    });
    escaped += ns_per_line(lines, rounds, [](const std::string& l) {
      std::string out;
      harnessd::acp::utf8::append_json_string(out, l);
      return out.size();
    });
  }
  std::printf("write a line:          nlohmann %.0f ns, append_json %.0f ns (x%.2f)\n", dumped / 2, written / 2,
              written / dumped);
  std::printf("quote a line's text:   nlohmann %.0f ns, append_json_string %.0f ns (x%.2f)\n", quoted / 2,
              escaped / 2, escaped / quoted);
  return 0;
}
