// Decoder: reads a JSON-RPC params object field by field and keeps the first
// problem as a -32602 error that names the method and the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "schema/rpc_error.h"

namespace harnessd::schema {

/// Each accessor returns the field's value, or nothing when the field is
/// absent, null or wrong. The first wrong or missing required field is kept;
/// later calls still work but do not overwrite it. `error()` is only
/// meaningful when `ok()` is false.
class Decoder {
 public:
  /// `params` may be null (treated as `{}`, ACP allows omitted params); any
  /// other non-object is an error.
  Decoder(std::string method, const nlohmann::json& params);

  bool ok() const { return !error_; }
  const RpcError& error() const { return *error_; }
  const std::string& method() const { return method_; }

  std::optional<std::string> required_string(std::string_view key);
  std::optional<std::string> optional_string(std::string_view key);
  std::optional<bool> optional_bool(std::string_view key);
  std::optional<std::int64_t> required_int(std::string_view key, std::int64_t min, std::int64_t max);
  std::optional<std::int64_t> optional_int(std::string_view key, std::int64_t min, std::int64_t max);
  /// Returns the array, or nullptr (with an error when required).
  const nlohmann::json* required_array(std::string_view key);
  const nlohmann::json* optional_array(std::string_view key);
  const nlohmann::json* optional_object(std::string_view key);
  /// Any JSON value except absent (null counts as present only when allowed).
  const nlohmann::json* required_value(std::string_view key);

  /// A decoder for a nested object, reporting paths like `_meta.harnessd.name`.
  /// Errors found through the child are copied back by `absorb`.
  Decoder nested(std::string_view key);
  /// A decoder for `object` (e.g. an array element) reported as `label`.
  Decoder child(std::string_view label, const nlohmann::json& object) const;
  void absorb(const Decoder& child);

  /// Keeps `error` as the problem unless one was found before.
  void set_error(RpcError error) {
    if (!error_) error_ = std::move(error);
  }

  /// Records a custom problem with a field, e.g. "must be an absolute path".
  void fail(std::string_view key, std::string_view problem);

 private:
  Decoder(std::string method, std::string prefix, const nlohmann::json* object);
  const nlohmann::json* find(std::string_view key) const;
  std::string path(std::string_view key) const;

  std::string method_;
  std::string prefix_;
  const nlohmann::json* object_ = nullptr;  // null when absent or null
  std::optional<RpcError> error_;
};

/// The JSON type name used in error messages ("string", "object", ...).
std::string_view type_name(const nlohmann::json& value);

}  // namespace harnessd::schema
