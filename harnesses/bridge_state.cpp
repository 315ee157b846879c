// Bridge state files.
#include "harnesses/bridge_state.h"
#include "acp/files.h"
#include "schema/json_parse.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace harnessd::harnesses {


std::string bridge_state_dir(const std::string& bridge) {
  if (const char* s = std::getenv("HARNESSD_STATE_DIR"); s && *s == '/') return std::string(s) + "/bridges/" + bridge;
  return acp::default_state_home() + "/bridges/" + bridge;
}

std::optional<nlohmann::json> load_bridge_state(const std::string& bridge, const std::string& session) {
  if (!acp::is_safe_id(session)) return std::nullopt;
  std::ifstream in(bridge_state_dir(bridge) + "/" + session + ".json");
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = schema::parse_or_discard(ss.str());
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

bool save_bridge_state(const std::string& bridge, const std::string& session, const nlohmann::json& state) {
  if (!acp::is_safe_id(session)) return false;
  std::string dir = bridge_state_dir(bridge);
  acp::make_dirs(dir);
  std::string path = dir + "/" + session + ".json";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::string text = state.dump() + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace harnessd::harnesses
