// A strict scanner for one shape of JSON: it accepts only what it fully
// understands and declines everything else.
#include "schema/text_chunk.h"

#include <array>

namespace harnessd::schema {

namespace {

class Strict {
 public:
  explicit Strict(std::string_view s) : s_(s) {}

  std::size_t pos() const { return i_; }
  bool at_end() {
    space();
    return i_ == s_.size();
  }

  // Spaces only: a line with any raw control character (a tab or CR
  // between members included) is left to the parser, as session_id_span
  // leaves it.
  void space() {
    while (i_ < s_.size() && s_[i_] == ' ') ++i_;
  }

  bool consume(char c) {
    space();
    if (i_ == s_.size() || s_[i_] != c) return false;
    ++i_;
    return true;
  }

  // A string with no escape: its bytes between the quotes.
  std::optional<std::string_view> plain_string() {
    space();
    if (i_ == s_.size() || s_[i_] != '"') return std::nullopt;
    const std::size_t start = ++i_;
    while (i_ < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') return s_.substr(start, i_++ - start);
      if (c == '\\' || c < 0x20) return std::nullopt;
      ++i_;
    }
    return std::nullopt;
  }

  // A string whose escapes are the short ones (\" \\ \/ \b \f \n \r \t),
  // unescaped into `out`.
  bool text_string(std::string& out) {
    space();
    if (i_ == s_.size() || s_[i_] != '"') return false;
    ++i_;
    out.clear();
    std::size_t run = i_;  // start of the bytes not yet copied
    while (i_ < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        out.append(s_.substr(run, i_ - run));
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c != '\\') {
        ++i_;
        continue;
      }
      out.append(s_.substr(run, i_ - run));
      if (++i_ == s_.size()) return false;
      switch (s_[i_]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        default: return false;  // \u and anything else: the parser's business
      }
      run = ++i_;
    }
    return false;
  }

  // An object whose members are all known: `member(name)` reads the value
  // of each (false: decline). Names have no escapes.
  template <class Member>
  bool object(Member member) {
    if (!consume('{')) return false;
    if (consume('}')) return false;  // an empty object is never the shape
    for (;;) {
      auto name = plain_string();
      if (!name || !consume(':') || !member(*name)) return false;
      if (consume('}')) return true;
      if (!consume(',')) return false;
    }
  }

  bool equals(std::string_view want) {
    auto got = plain_string();
    return got && *got == want;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

constexpr std::array<std::string_view, 3> kKinds = {"agent_message_chunk", "agent_thought_chunk",
                                                    "user_message_chunk"};

}  // namespace

std::optional<TextChunk> scan_text_chunk(std::string_view line) {
  Strict scan(line);
  TextChunk out;
  // Each member once: a bit per member seen.
  unsigned seen = 0;
  auto once = [&seen](unsigned bit) {
    if (seen & bit) return false;
    seen |= bit;
    return true;
  };
  auto content = [&](std::string_view name) {
    if (name == "type") return once(1u << 0) && scan.equals("text");
    if (name == "text") return once(1u << 1) && scan.text_string(out.text);
    return false;
  };
  auto update = [&](std::string_view name) {
    if (name == "sessionUpdate") {
      auto kind = scan.plain_string();
      if (!once(1u << 2) || !kind) return false;
      for (auto k : kKinds) {
        if (*kind == k) out.kind = k;
      }
      return !out.kind.empty();
    }
    if (name == "content") return once(1u << 3) && scan.object(content);
    return false;
  };
  auto params = [&](std::string_view name) {
    if (name == "sessionId") {
      if (!once(1u << 4)) return false;
      scan.space();
      const std::size_t first = scan.pos();
      if (!scan.plain_string()) return false;
      out.session_id = {first, scan.pos()};
      return true;
    }
    if (name == "update") return once(1u << 5) && scan.object(update);
    return false;
  };
  auto top = [&](std::string_view name) {
    if (name == "jsonrpc") return once(1u << 6) && scan.equals("2.0");
    if (name == "method") return once(1u << 7) && scan.equals("session/update");
    if (name == "params") return once(1u << 8) && scan.object(params);
    return false;
  };
  if (!scan.object(top) || !scan.at_end() || seen != 0x1ffu) return std::nullopt;
  return out;
}

}  // namespace harnessd::schema
