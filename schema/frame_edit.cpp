#include "schema/frame_edit.h"

#include <string_view>

namespace harnessd::schema {

namespace {

// A scan of JSON that is known to be well-formed: it only tracks strings,
// nesting and where each member name of the two outer levels is.
class Scan {
 public:
  explicit Scan(std::string_view s) : s_(s) {}

  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return s_[i_]; }
  std::size_t pos() const { return i_; }

  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) ++i_;
  }

  // At a '"': moves past the closing quote; false if the string holds an
  // escape (reported through `escaped`) or the line ends first.
  bool string(bool* escaped) {
    ++i_;
    *escaped = false;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (c == '\\') {
        *escaped = true;
        i_ += 2;
        continue;
      }
      ++i_;
      if (c == '"') return true;
    }
    return false;
  }

  // Moves past one value of any kind.
  bool value() {
    skip_space();
    if (at_end()) return false;
    char c = peek();
    if (c == '"') {
      bool escaped;
      return string(&escaped);
    }
    if (c == '{' || c == '[') {
      int depth = 0;
      while (i_ < s_.size()) {
        c = s_[i_];
        if (c == '"') {
          bool escaped;
          if (!string(&escaped)) return false;
          continue;
        }
        ++i_;
        if (c == '{' || c == '[') ++depth;
        if ((c == '}' || c == ']') && --depth == 0) return true;
      }
      return false;
    }
    // A number, true, false or null.
    while (i_ < s_.size() && s_[i_] != ',' && s_[i_] != '}' && s_[i_] != ']' && s_[i_] != ' ' && s_[i_] != '\t' &&
           s_[i_] != '\r' && s_[i_] != '\n') {
      ++i_;
    }
    return true;
  }

  // Walks the members of the object at the cursor, calling
  // `member(name)` with the cursor on each value; it must move past the
  // value. Member names with escapes fail the walk.
  template <class Member>
  bool object(Member member) {
    skip_space();
    if (at_end() || peek() != '{') return false;
    ++i_;
    skip_space();
    if (!at_end() && peek() == '}') {
      ++i_;
      return true;
    }
    while (!at_end()) {
      skip_space();
      if (at_end() || peek() != '"') return false;
      std::size_t start = i_ + 1;
      bool escaped;
      if (!string(&escaped) || escaped) return false;
      std::string_view name = s_.substr(start, i_ - 1 - start);
      skip_space();
      if (at_end() || peek() != ':') return false;
      ++i_;
      skip_space();
      if (!member(name)) return false;
      skip_space();
      if (at_end()) return false;
      if (peek() == '}') {
        ++i_;
        return true;
      }
      if (peek() != ',') return false;
      ++i_;
    }
    return false;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

}  // namespace

std::optional<std::pair<std::size_t, std::size_t>> session_id_span(std::string_view line) {
  for (char c : line) {
    if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
  }
  Scan scan(line);
  int jsonrpc = 0, method = 0, params = 0, session_id = 0;
  std::size_t first = 0, last = 0;
  bool ok = scan.object([&](std::string_view name) {
    if (name == "jsonrpc") {
      ++jsonrpc;
    } else if (name == "method") {
      ++method;
    } else if (name == "params") {
      ++params;
      return scan.object([&](std::string_view inner) {
        if (inner != "sessionId") return scan.value();
        ++session_id;
        if (scan.at_end() || scan.peek() != '"') return false;
        first = scan.pos();
        if (!scan.value()) return false;
        last = scan.pos();
        return true;
      });
    } else {
      return false;
    }
    return scan.value();
  });
  if (!ok || jsonrpc != 1 || method != 1 || params != 1 || session_id != 1) return std::nullopt;
  scan.skip_space();
  if (!scan.at_end()) return std::nullopt;
  return std::make_pair(first, last);
}

std::string readdress(std::string_view line, std::pair<std::size_t, std::size_t> span, std::string_view quoted_id) {
  std::string out;
  out.reserve(line.size() - (span.second - span.first) + quoted_id.size() + 1);
  out.append(line.substr(0, span.first));
  out += quoted_id;
  out.append(line.substr(span.second));
  out += '\n';
  return out;
}

}  // namespace harnessd::schema
