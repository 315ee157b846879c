#include "acp/json_write.h"

#include <charconv>

#include "acp/utf8.h"

namespace harnessd::acp {

using nlohmann::json;

namespace {

template <class Int>
void append_int(std::string& out, Int n) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n);
  out.append(digits, end);
}

void append_value(std::string& out, const json& v, int indent, int depth) {
  switch (v.type()) {
    case json::value_t::null: out += "null"; return;
    case json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case json::value_t::number_integer: append_int(out, v.get<json::number_integer_t>()); return;
    case json::value_t::number_unsigned: append_int(out, v.get<json::number_unsigned_t>()); return;
    case json::value_t::string: utf8::append_json_string(out, v.get_ref<const std::string&>()); return;
    case json::value_t::object:
    case json::value_t::array: break;
    default:
      // Floats (nlohmann's shortest round-trip form), binary, discarded.
      out += v.dump(-1, ' ', false, json::error_handler_t::replace);
      return;
  }
  const bool object = v.is_object();
  if (v.empty()) {
    out += object ? "{}" : "[]";
    return;
  }
  out += object ? '{' : '[';
  const bool pretty = indent >= 0;
  bool first = true;
  auto next = [&] {
    if (!first) out += ',';
    first = false;
    if (pretty) {
      out += '\n';
      out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(depth + 1), ' ');
    }
  };
  if (object) {
    for (const auto& [key, member] : v.items()) {
      next();
      utf8::append_json_string(out, key);
      out += pretty ? ": " : ":";
      append_value(out, member, indent, depth + 1);
    }
  } else {
    for (const auto& element : v) {
      next();
      append_value(out, element, indent, depth + 1);
    }
  }
  if (pretty) {
    out += '\n';
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(depth), ' ');
  }
  out += object ? '}' : ']';
}

}  // namespace

void append_json(std::string& out, const json& value, int indent, int depth) {
  append_value(out, value, indent, depth);
}

std::string json_text(const json& value, int indent) {
  std::string out;
  if (value.is_structured()) out.reserve(256);  // one allocation for most, not one per doubling
  append_json(out, value, indent);
  return out;
}

}  // namespace harnessd::acp
