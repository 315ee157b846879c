// JSON conversion of RpcError.
#include "schema/rpc_error.h"

namespace harnessd {

void to_json(nlohmann::json& j, const RpcError& e) {
  j = {{"code", e.code}, {"message", e.message}};
  if (!e.data.is_null()) j["data"] = e.data;
}

void from_json(const nlohmann::json& j, RpcError& e) {
  if (j.is_object() && j.contains("code") && j["code"].is_number_integer()) {
    e.code = j["code"].get<int>();
    auto msg = j.find("message");
    e.message = (msg != j.end() && msg->is_string()) ? msg->get<std::string>() : "error without a message";
    auto data = j.find("data");
    e.data = data != j.end() ? *data : nlohmann::json();
  } else {
    e = RpcError::internal("peer sent a malformed error object");
    e.data = {{"error", j}};
  }
}

}  // namespace harnessd
