// The sandbox of an adapter tree ([harness.X] sandbox, network, writable):
// bubblewrap between the guard and the adapter (guard -> bwrap -> adapter),
// so the guard's kill ladder still covers all of it. A sandbox that cannot
// be made on this machine is refused, never weakened.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace harnessd::adapters {

struct Sandbox {
  /// "none" (no sandbox, the default), "read-only" (nothing writable but
  /// a private /tmp) or "workspace-write" (also the session's cwd and
  /// `writable`).
  std::string mode = "none";
  /// False: the tree gets a network namespace of its own, with loopback only.
  bool network = true;
  /// Further paths writable under "workspace-write": absolute, or "~/..."
  /// for the user's home directory.
  std::vector<std::string> writable;

  bool enabled() const { return mode != "none"; }
  bool operator==(const Sandbox&) const = default;
};

/// True for "none", "read-only" and "workspace-write".
bool is_sandbox_mode(std::string_view mode);

/// True when `stricter` allows nothing that `base` forbids: a mode at
/// least as strict (none < workspace-write < read-only), no network where
/// `base` has none, and no writable path that `base` lacks.
bool at_least_as_strict(const Sandbox& stricter, const Sandbox& base);

/// `base` made as strict as `choice` where that is stricter: the stricter
/// of the two modes, no network if either has none; `base`'s writable
/// paths. A choice of {"none", network} changes nothing.
Sandbox tightened(const Sandbox& base, const Sandbox& choice);

/// Where an adapter of `sandbox` started in `cwd` may write, besides its
/// private /tmp: nothing under "read-only"; `cwd`, then `sandbox.writable`
/// ("~/" taken from `home`; left out when `home` is empty) under
/// "workspace-write". Empty for "none", where nothing is enforced.
std::vector<std::string> writable_paths(const Sandbox& sandbox, const std::string& cwd, const std::string& home);

/// The effective sandbox as session/new's answer and result.json report
/// it: {"mode":"none"}, or {"mode", "network", "writable"}.
nlohmann::json sandbox_json(const Sandbox& sandbox, const std::vector<std::string>& writable);

/// The command that runs `argv` (argv[0] an absolute path) in `sandbox`
/// through the bubblewrap at `bwrap`: the host read-only, `writable` (from
/// writable_paths, plus what harnessd adds) writable, a private /tmp, /dev
/// and /proc of bubblewrap's own, a new session, no network unless
/// `sandbox.network`, and the whole sandbox killed when its parent (the
/// guard) dies. It starts in `cwd`. Each directory of `hidden` is covered
/// by an empty read-only one (harnessd's state directory, whose socket would let the
/// adapter ask harnessd for an unsandboxed session); what `writable` names
/// inside one is still there.
std::vector<std::string> sandbox_argv(const std::string& bwrap, const Sandbox& sandbox, const std::string& cwd,
                                      const std::vector<std::string>& writable, const std::vector<std::string>& hidden,
                                      const std::vector<std::string>& argv);

/// Whether this machine can make the sandbox.
class SandboxSupport {
 public:
  /// Probed once per process, at its first use, with bwrap looked up on
  /// this process's PATH.
  static const SandboxSupport& here();
  /// Probes now: finds bwrap on `path` (colon-separated) and runs it once
  /// with the namespaces a sandbox needs (a few milliseconds). Blocks.
  static SandboxSupport probe(const std::string& path);

  bool available() const { return why_not_.empty(); }
  /// The absolute path of bwrap; empty when it was not found.
  const std::string& bwrap() const { return bwrap_; }
  /// What `bwrap --version` said inside the probe's sandbox.
  const std::string& version() const { return version_; }
  /// For `harnesses --check`: "bubblewrap 0.8.0 (/usr/bin/bwrap)", or
  /// "none (why)".
  std::string describe() const;
  /// Why no sandbox can be made here, if none can.
  std::optional<std::string> refuse() const;
  /// What would make it work ("apt-get install bubblewrap", ...); empty
  /// when it works.
  const std::string& hint() const { return hint_; }

 private:
  std::string bwrap_;
  std::string version_;
  std::string why_not_;
  std::string hint_;
};

}  // namespace harnessd::adapters
