// Field-by-field params decoding with messages that name method and field.
#include "schema/decoder.h"

namespace harnessd::schema {

using nlohmann::json;

std::string_view type_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "object";
    case json::value_t::array: return "array";
    case json::value_t::string: return "string";
    case json::value_t::boolean: return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "integer";
    case json::value_t::number_float: return "number";
    default: return "value";
  }
}

Decoder::Decoder(std::string method, const json& params) : method_(std::move(method)) {
  if (params.is_object()) {
    object_ = &params;
  } else if (!params.is_null()) {
    error_ = RpcError::invalid_params(method_ + ": params must be an object, not " +
                                      std::string(type_name(params)));
  }
}

Decoder::Decoder(std::string method, std::string prefix, const json* object)
    : method_(std::move(method)), prefix_(std::move(prefix)), object_(object) {}

const json* Decoder::find(std::string_view key) const {
  if (!object_) return nullptr;
  auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) return nullptr;
  return &*it;
}

std::string Decoder::path(std::string_view key) const { return prefix_ + std::string(key); }

void Decoder::fail(std::string_view key, std::string_view problem) {
  if (error_) return;
  error_ = RpcError::invalid_params(method_ + ": " + path(key) + " " + std::string(problem));
  error_->data = {{"method", method_}, {"field", path(key)}};
}

std::optional<std::string> Decoder::required_string(std::string_view key) {
  const json* v = find(key);
  if (!v) {
    fail(key, "is required");
    return std::nullopt;
  }
  if (!v->is_string()) {
    fail(key, "must be a string, not " + std::string(type_name(*v)));
    return std::nullopt;
  }
  return v->get<std::string>();
}

std::optional<std::string> Decoder::optional_string(std::string_view key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    fail(key, "must be a string, not " + std::string(type_name(*v)));
    return std::nullopt;
  }
  return v->get<std::string>();
}

std::optional<bool> Decoder::optional_bool(std::string_view key) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) {
    fail(key, "must be a boolean, not " + std::string(type_name(*v)));
    return std::nullopt;
  }
  return v->get<bool>();
}

std::optional<std::int64_t> Decoder::optional_int(std::string_view key, std::int64_t min, std::int64_t max) {
  const json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) {
    fail(key, "must be an integer, not " + std::string(type_name(*v)));
    return std::nullopt;
  }
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    fail(key, "must be at most " + std::to_string(max));
    return std::nullopt;
  }
  auto n = v->get<std::int64_t>();
  if (n < min || n > max) {
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return std::nullopt;
  }
  return n;
}

std::optional<std::int64_t> Decoder::required_int(std::string_view key, std::int64_t min, std::int64_t max) {
  if (!find(key)) {
    fail(key, "is required");
    return std::nullopt;
  }
  return optional_int(key, min, max);
}

const json* Decoder::optional_array(std::string_view key) {
  const json* v = find(key);
  if (!v) return nullptr;
  if (!v->is_array()) {
    fail(key, "must be an array, not " + std::string(type_name(*v)));
    return nullptr;
  }
  return v;
}

const json* Decoder::required_array(std::string_view key) {
  if (!find(key)) {
    fail(key, "is required");
    return nullptr;
  }
  return optional_array(key);
}

const json* Decoder::optional_object(std::string_view key) {
  const json* v = find(key);
  if (!v) return nullptr;
  if (!v->is_object()) {
    fail(key, "must be an object, not " + std::string(type_name(*v)));
    return nullptr;
  }
  return v;
}

const json* Decoder::required_value(std::string_view key) {
  const json* v = find(key);
  if (!v) fail(key, "is required");
  return v;
}

Decoder Decoder::nested(std::string_view key) {
  const json* obj = optional_object(key);
  return Decoder(method_, path(key) + ".", obj);
}

Decoder Decoder::child(std::string_view label, const json& object) const {
  return Decoder(method_, path(label) + ".", object.is_object() ? &object : nullptr);
}

void Decoder::absorb(const Decoder& child) {
  if (!error_ && child.error_) error_ = child.error_;
}

}  // namespace harnessd::schema
