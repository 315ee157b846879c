// A depth check wrapped around nlohmann's own DOM builder: the parser is
// iterative, so the limit is enforced while reading, before any deep tree
// exists to be copied or destroyed.
#include "schema/json_parse.h"

#include <cstring>
#include <optional>

namespace harnessd::schema {

using nlohmann::json;

namespace {

constexpr int kNumberOutOfRange = 406;  // nlohmann's out_of_range.406

// Counts depth and records the first error; `Inner` builds the value (the
// library's DOM parser) or nothing (accept_json).
template <class Inner>
struct DepthLimited {
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  DepthLimited(Inner& i, std::size_t max) : inner(i), max_depth(max) {}

  Inner& inner;
  std::size_t max_depth;
  std::size_t depth = 0;
  bool failed = false;
  JsonError error;

  bool null() { return inner.null(); }
  bool boolean(bool v) { return inner.boolean(v); }
  bool number_integer(number_integer_t v) { return inner.number_integer(v); }
  bool number_unsigned(number_unsigned_t v) { return inner.number_unsigned(v); }
  bool number_float(number_float_t v, const string_t& s) { return inner.number_float(v, s); }
  bool string(string_t& v) { return inner.string(v); }
  bool binary(binary_t& v) { return inner.binary(v); }
  bool key(string_t& v) { return inner.key(v); }
  bool start_object(std::size_t n) { return enter() && inner.start_object(n); }
  bool end_object() {
    --depth;
    return inner.end_object();
  }
  bool start_array(std::size_t n) { return enter() && inner.start_array(n); }
  bool end_array() {
    --depth;
    return inner.end_array();
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    failed = true;
    error.offset = position;
    if (ex.id == kNumberOutOfRange) {
      error.kind = JsonError::Kind::kNumberRange;
      error.message = "with a number out of range at byte " + std::to_string(position);
    } else {
      error.kind = JsonError::Kind::kSyntax;
      error.message = ex.what();
      if (auto pos = error.message.find("] "); pos != std::string::npos) error.message.erase(0, pos + 2);
    }
    return false;
  }

  bool enter() {
    if (++depth <= max_depth) return true;
    failed = true;
    error.kind = JsonError::Kind::kTooDeep;
    error.message = "nested deeper than " + std::to_string(max_depth) + " levels";
    return false;
  }
};

// Builds nothing: the inner events of accept_json.
struct Discard {
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool key(json::string_t&) { return true; }
  bool start_object(std::size_t) { return true; }
  bool end_object() { return true; }
  bool start_array(std::size_t) { return true; }
  bool end_array() { return true; }
};

std::optional<JsonError> nul_byte(std::string_view text) {
  // nlohmann stops at a NUL as if the text ended there, so "{...}\0junk"
  // would pass. A raw NUL is never valid JSON.
  const void* nul = std::memchr(text.data(), '\0', text.size());
  if (!nul) return std::nullopt;
  std::size_t at = static_cast<std::size_t>(static_cast<const char*>(nul) - text.data());
  return JsonError{JsonError::Kind::kNulByte, "a NUL byte at byte " + std::to_string(at), at};
}

template <class Inner>
Expected<void, JsonError> run(std::string_view text, Inner& inner, std::size_t max_depth) {
  if (auto nul = nul_byte(text)) return *nul;
  DepthLimited<Inner> sax(inner, max_depth);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json, true);
  } catch (const std::exception& e) {
    // Not expected (the SAX reports errors instead), but nothing may escape.
    return JsonError{JsonError::Kind::kSyntax, e.what(), 0};
  }
  if (sax.failed) return sax.error;
  if (!ok) return JsonError{JsonError::Kind::kSyntax, "not a JSON value", 0};
  return {};
}

}  // namespace

Expected<json, JsonError> parse_json(std::string_view text, std::size_t max_depth) {
  json value;
  nlohmann::detail::json_sax_dom_parser<json> dom(value, false);
  if (auto r = run(text, dom, max_depth); !r) return std::move(r).error();
  return value;
}

json parse_or_discard(std::string_view text, std::size_t max_depth) {
  auto parsed = parse_json(text, max_depth);
  if (!parsed) return json(json::value_t::discarded);
  return std::move(*parsed);
}

bool accept_json(std::string_view text, std::size_t max_depth) {
  Discard none;
  return run(text, none, max_depth).has_value();
}

}  // namespace harnessd::schema
