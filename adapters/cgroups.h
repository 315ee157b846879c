// Resource limits on one adapter tree ([harness.X] limits), through a cgroup
// of its own. harnessd makes the cgroup, the guard joins it before it starts
// the adapter (so everything the adapter starts is in it from its first
// instruction), and the cgroup goes when the link is destroyed, after the
// tree has exited. Limits that cannot be enforced on this machine are
// refused, never pretended.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/expected.h"

namespace harnessd::adapters {

struct ResourceLimits {
  std::optional<std::uint64_t> memory;  // bytes, swap included where the kernel counts it
  std::optional<std::uint64_t> pids;    // processes and threads of the tree
  std::optional<double> cpu;            // CPUs' worth of time, e.g. 1.5
  bool any() const { return memory || pids || cpu; }
  /// "memory 2G, pids 512, cpu 1.5".
  std::string describe() const;
  bool operator==(const ResourceLimits&) const = default;
};

/// "2G", "512M", "64K", "1048576" (powers of 1024), or nothing.
std::optional<std::uint64_t> parse_bytes(std::string_view text);

/// One adapter tree's cgroups; removed when destroyed.
class AdapterCgroup {
 public:
  AdapterCgroup(std::vector<std::string> dirs, std::string memory_dir, ResourceLimits limits);
  ~AdapterCgroup();
  AdapterCgroup(const AdapterCgroup&) = delete;
  AdapterCgroup& operator=(const AdapterCgroup&) = delete;

  /// The files the guard writes its pid to (cgroup.procs of each).
  std::vector<std::string> procs_files() const;
  /// "memory limit" once the kernel has killed a process of the tree for
  /// its memory limit, else "".
  std::string killed_by() const;
  const ResourceLimits& limits() const { return limits_; }

 private:
  std::vector<std::string> dirs_;
  std::string memory_dir_;
  ResourceLimits limits_;
};

/// What this machine offers for limits.
class CgroupSupport {
 public:
  /// Read once from /proc/self/mountinfo and /proc/self/cgroup: the cgroup
  /// v1 hierarchies of the memory, pids and cpu controllers in which this
  /// process may create cgroups. HARNESSD_NO_CGROUPS in the environment
  /// (for tests) makes it offer none.
  static const CgroupSupport& here();
  /// The same from given texts (tests).
  static CgroupSupport from(const std::string& mountinfo, const std::string& self_cgroup);

  /// For `harnesses --check`: the mechanism and where, or why there is none.
  std::string describe() const;
  /// Why `limits` cannot be enforced here, if they cannot.
  std::optional<std::string> refuse(const ResourceLimits& limits) const;
  /// Makes the cgroups of one adapter tree, named after harnessd's pid and
  /// `name`, with `limits` set.
  Expected<std::shared_ptr<AdapterCgroup>> create(const ResourceLimits& limits, const std::string& name) const;

 private:
  std::map<std::string, std::string> bases_;  // controller: a directory we may create cgroups in
  std::string why_none_;
};

}  // namespace harnessd::adapters
