// A session's configOptions (ACP v1 "session config options").
#include "worker/session_options.h"

namespace harnessd::worker {

using nlohmann::json;

json SessionOptions::list(const std::string& harness) const {
  json choices = json::array();
  for (const auto& [name, profile] : harnesses_) {
    json choice = {{"value", name}, {"name", name}};
    if (!profile.description.empty()) choice["description"] = profile.description;
    choices.push_back(std::move(choice));
  }
  json out = json::array({{{"id", "harness"},
                           {"name", "Harness"},
                           {"description", "The harness that runs this session's prompts; fixed at the first prompt"},
                           {"category", "_harness"},
                           {"type", "select"},
                           {"currentValue", harness},
                           {"options", std::move(choices)}}});
  for (const auto& option : adapter_) {
    if (option.is_object() && option.value("id", "") != "harness") out.push_back(option);
  }
  return out;
}

void SessionOptions::expect(const std::string& harness, const json& choices) {
  auto known = known_.find(harness);
  adapter_ = known != known_.end() ? known->second : json::array();
  for (auto& option : adapter_) {
    if (!option.is_object()) continue;
    auto choice = choices.find(option.value("id", ""));
    if (choice != choices.end()) option["currentValue"] = *choice;
  }
}

bool SessionOptions::take(const json& answer) {
  if (!answer.is_object()) return false;
  auto it = answer.find("configOptions");
  if (it == answer.end() || !it->is_array() || *it == adapter_) return false;
  adapter_ = *it;
  return true;
}

std::optional<std::string> SessionOptions::mode_option() const {
  for (const auto& option : adapter_) {
    if (option.is_object() && option.value("category", "") == "mode") return option.value("id", "");
  }
  return std::nullopt;
}

}  // namespace harnessd::worker
