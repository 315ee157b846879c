// Cgroups for adapter trees (cgroup v1).
#include "adapters/cgroups.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "acp/files.h"
#include "acp/log.h"

namespace harnessd::adapters {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string size_text(std::uint64_t bytes) {
  static const char* const kUnits[] = {"", "K", "M", "G", "T"};
  int unit = 0;
  while (unit < 4 && bytes % 1024 == 0 && bytes >= 1024) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + kUnits[unit];
}

std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t end = text.find(sep, start);
    out.emplace_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

Expected<void> write_file(const std::string& path, const std::string& value) {
  if (auto fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC); fd >= 0) {
    const int err = acp::write_all(fd, value);
    ::close(fd);
    if (err == 0) return {};
    return Error{"cannot write " + value + " to " + path + ": " + std::strerror(err)};
  }
  return Error{"cannot open " + path + ": " + std::strerror(errno)};
}

constexpr const char* kControllers[] = {"memory", "pids", "cpu"};

}  // namespace

std::string ResourceLimits::describe() const {
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : ", ") + part; };
  if (memory) add("memory " + size_text(*memory));
  if (pids) add("pids " + std::to_string(*pids));
  if (cpu) {
    std::ostringstream s;
    s << *cpu;
    add("cpu " + s.str());
  }
  return out;
}

std::optional<std::uint64_t> parse_bytes(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t scale = 1;
  switch (text.back()) {
    case 'K': case 'k': scale = 1ull << 10; break;
    case 'M': case 'm': scale = 1ull << 20; break;
    case 'G': case 'g': scale = 1ull << 30; break;
    case 'T': case 't': scale = 1ull << 40; break;
    default: break;
  }
  if (scale != 1) text.remove_suffix(1);
  if (text.empty() || text.size() > 15) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (n == 0) return std::nullopt;
  return n * scale;
}

AdapterCgroup::AdapterCgroup(std::vector<std::string> dirs, std::string memory_dir, ResourceLimits limits)
    : dirs_(std::move(dirs)), memory_dir_(std::move(memory_dir)), limits_(limits) {}

AdapterCgroup::~AdapterCgroup() {
  // The tree has exited by now; a cgroup that still holds a process (one
  // that escaped the kill) stays, and says so.
  for (const auto& dir : dirs_) {
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
      acp::log::warn("cannot remove the adapter's cgroup " + dir + ": " + std::strerror(errno));
    }
  }
}

std::vector<std::string> AdapterCgroup::procs_files() const {
  std::vector<std::string> out;
  for (const auto& dir : dirs_) out.push_back(dir + "/cgroup.procs");
  return out;
}

std::string AdapterCgroup::killed_by() const {
  if (memory_dir_.empty()) return "";
  // v1: memory.oom_control counts the OOM kills in the cgroup.
  std::istringstream in(read_text(memory_dir_ + "/memory.oom_control"));
  std::string key;
  long long value = 0;
  while (in >> key >> value) {
    if (key == "oom_kill" && value > 0) return "memory limit";
  }
  return "";
}

const CgroupSupport& CgroupSupport::here() {
  static const CgroupSupport support = [] {
    if (std::getenv("HARNESSD_NO_CGROUPS")) {
      CgroupSupport none;
      none.why_none_ = "HARNESSD_NO_CGROUPS is set";
      return none;
    }
    return from(read_text("/proc/self/mountinfo"), read_text("/proc/self/cgroup"));
  }();
  return support;
}

CgroupSupport CgroupSupport::from(const std::string& mountinfo, const std::string& self_cgroup) {
  CgroupSupport s;
  // Where this process is in each v1 hierarchy, by controller.
  std::map<std::string, std::string> own;
  bool v2_only = false;
  for (const auto& line : split(self_cgroup, '\n')) {
    auto parts = split(line, ':');
    if (parts.size() < 3) continue;
    if (parts[0] == "0" && parts[1].empty()) {
      v2_only = own.empty();
      continue;
    }
    for (const auto& c : split(parts[1], ',')) own[c] = parts[2];
  }
  for (const auto& line : split(mountinfo, '\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto fields = split(line.substr(0, dash), ' ');
    auto tail = split(line.substr(dash + 3), ' ');
    if (fields.size() < 5 || tail.size() < 3 || tail[0] != "cgroup") continue;
    const std::string& root = fields[3];
    const std::string& mount = fields[4];
    for (const auto& option : split(tail[2], ',')) {
      for (const char* c : kControllers) {
        if (option != c || !own.count(c)) continue;
        // Our cgroup as seen in this mount (which may show a subtree).
        std::string path = own[c];
        if (root != "/" && path.rfind(root, 0) == 0) path = path.substr(root.size());
        std::string base = mount + (path == "/" ? "" : path);
        if (::access(base.c_str(), W_OK) == 0) s.bases_[c] = base;
      }
    }
  }
  if (s.bases_.empty()) {
    s.why_none_ = v2_only ? "cgroup v2 only, and harnessd creates cgroups in v1 hierarchies only"
                          : "no cgroup v1 hierarchy of memory, pids or cpu that this user may create cgroups in";
  }
  return s;
}

std::string CgroupSupport::describe() const {
  if (bases_.empty()) return "none (" + why_none_ + "); profiles with limits are refused";
  std::string out = "cgroup v1:";
  for (const auto& [controller, base] : bases_) out += " " + controller + " at " + base;
  return out;
}

std::optional<std::string> CgroupSupport::refuse(const ResourceLimits& limits) const {
  std::string missing;
  auto need = [&](bool wanted, const char* controller) {
    if (wanted && !bases_.count(controller)) missing += (missing.empty() ? "" : ", ") + std::string(controller);
  };
  need(limits.memory.has_value(), "memory");
  need(limits.pids.has_value(), "pids");
  need(limits.cpu.has_value(), "cpu");
  if (missing.empty()) return std::nullopt;
  return "no cgroup controller for " + missing + " that harnessd may use here (" +
         (bases_.empty() ? why_none_ : describe()) + ")";
}

Expected<std::shared_ptr<AdapterCgroup>> CgroupSupport::create(const ResourceLimits& limits,
                                                               const std::string& name) const {
  if (auto why = refuse(limits)) return Error{*why};
  static std::atomic<std::uint64_t> next{1};
  std::string safe = name;
  for (char& c : safe) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  }
  const std::string leaf = "harnessd-" + std::to_string(::getpid()) + "-" + std::to_string(next++) + "-" + safe;
  std::vector<std::string> dirs;
  std::string memory_dir;
  // Made in turn; what was made is removed again if a step fails.
  auto cgroup = [&](const char* controller) -> Expected<std::string> {
    std::string dir = bases_.at(controller) + "/" + leaf;
    if (::mkdir(dir.c_str(), 0755) != 0) return Error{"cannot create " + dir + ": " + std::strerror(errno)};
    dirs.push_back(dir);
    return dir;
  };
  auto fail = [&](const Error& e) -> Expected<std::shared_ptr<AdapterCgroup>> {
    for (const auto& d : dirs) ::rmdir(d.c_str());
    return e;
  };
  if (limits.memory) {
    auto dir = cgroup("memory");
    if (!dir) return fail(dir.error());
    memory_dir = *dir;
    const std::string bytes = std::to_string(*limits.memory);
    if (auto w = write_file(*dir + "/memory.limit_in_bytes", bytes); !w) return fail(w.error());
    // With swap accounting, swap counts too: the limit is on what the tree holds.
    struct stat st {};
    if (::stat((*dir + "/memory.memsw.limit_in_bytes").c_str(), &st) == 0) {
      if (auto w = write_file(*dir + "/memory.memsw.limit_in_bytes", bytes); !w) return fail(w.error());
    }
  }
  if (limits.pids) {
    auto dir = cgroup("pids");
    if (!dir) return fail(dir.error());
    if (auto w = write_file(*dir + "/pids.max", std::to_string(*limits.pids)); !w) return fail(w.error());
  }
  if (limits.cpu) {
    auto dir = cgroup("cpu");
    if (!dir) return fail(dir.error());
    constexpr long long kPeriodUs = 100000;
    const long long quota = std::max(1000LL, std::llround(*limits.cpu * kPeriodUs));
    if (auto w = write_file(*dir + "/cpu.cfs_period_us", std::to_string(kPeriodUs)); !w) return fail(w.error());
    if (auto w = write_file(*dir + "/cpu.cfs_quota_us", std::to_string(quota)); !w) return fail(w.error());
  }
  return std::make_shared<AdapterCgroup>(std::move(dirs), std::move(memory_dir), limits);
}

}  // namespace harnessd::adapters
