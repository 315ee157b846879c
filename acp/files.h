// Small file and clock utilities that every folder above needs, written
// once: safe file-name ids, directory creation, whole writes, the state
// directory's default place, and harnessd's time stamps.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace harnessd::acp {

/// True for 1 to 100 characters of [A-Za-z0-9_-]: safe as one file name.
bool is_safe_id(std::string_view id);

/// Creates `path` and its missing parents with `mode` (like mkdir -p);
/// what exists already is left as it is. Errors show at the next open.
void make_dirs(const std::string& path, unsigned mode = 0700);

/// Writes all of `data` to `fd`, retrying after EINTR and short writes.
/// Returns 0, or the errno of the write that failed (EIO for a write of 0).
int write_all(int fd, std::string_view data);

/// Where harnessd keeps its state when nothing says otherwise:
/// $XDG_STATE_HOME/harnessd if that is an absolute path, else
/// ~/.local/state/harnessd.
std::string default_state_home();

/// ISO 8601 UTC with milliseconds ("2026-12-01T03:22:27.123Z").
std::string iso_time(std::chrono::system_clock::time_point t = std::chrono::system_clock::now());

}  // namespace harnessd::acp
