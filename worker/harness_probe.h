// Whether a harness profile can run here (for `harnessd harnesses`): where
// its program resolves on the PATH its adapter gets, and on request the
// first line its `--version` prints.
#pragma once

#include <string>
#include <vector>

#include "harnesses/profile.h"
#include "schema/expected.h"

namespace harnessd::worker {

struct HarnessProbe {
  /// The program's absolute path, or an error naming what is missing.
  Expected<std::string> found;
  /// What `<program> --version` printed first, or "" (not asked, or silent).
  std::string version;
};

/// Looks up `profile`'s program with the adapter environment made from
/// `parent` (NAME=value strings). With `check` and a program found, runs
/// `<program> --version` in that environment and waits up to 10 s for it.
HarnessProbe probe_harness(const harnesses::HarnessProfile& profile, const std::vector<std::string>& parent,
                           bool check);

}  // namespace harnessd::worker
