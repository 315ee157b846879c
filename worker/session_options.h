// SessionOptions: the configOptions a session shows its host. harnessd's
// own "harness" option comes first, then the adapter's options: those its
// adapter last listed, or before it runs, what the harness's adapter
// offered another session, with this session's choices as current values.
#pragma once

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "harnesses/profile.h"

namespace harnessd::worker {

class SessionOptions {
 public:
  /// `harnesses`: the profiles the host can choose from; `known`: per
  /// harness, the options its adapter last offered a new session.
  SessionOptions(const std::map<std::string, harnesses::HarnessProfile>& harnesses,
                 const std::map<std::string, nlohmann::json>& known)
      : harnesses_(harnesses), known_(known) {}

  /// The complete list, with `harness` as the harness option's value.
  nlohmann::json list(const std::string& harness) const;
  /// Starts from what `harness`'s adapter is known to offer, with
  /// `choices` ({configId: value}) as the current values.
  void expect(const std::string& harness, const nlohmann::json& choices);
  /// Takes the configOptions of an adapter's answer, if it has them;
  /// true if the adapter's list changed.
  bool take(const nlohmann::json& answer);
  /// Replaces the adapter's list (config_option_update).
  void replace(nlohmann::json adapter_options) { adapter_ = std::move(adapter_options); }
  /// The id of the adapter's option of category "mode", if it has one.
  std::optional<std::string> mode_option() const;

 private:
  const std::map<std::string, harnesses::HarnessProfile>& harnesses_;
  const std::map<std::string, nlohmann::json>& known_;
  nlohmann::json adapter_ = nlohmann::json::array();
};

}  // namespace harnessd::worker
