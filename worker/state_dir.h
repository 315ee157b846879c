// Files of the state directory, opened relative to a directory descriptor
// without ever following a symbolic link, and checked to be what harnessd
// made: a folder or regular file owned by this user (issue 11: links
// planted in the state directory must not redirect a write elsewhere).
#pragma once

#include <sys/types.h>

#include <cstdint>

#include <string>
#include <string_view>

#include "acp/files.h"
#include "schema/expected.h"
#include "worker/ledger.h"

namespace harnessd::worker {

/// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

/// Why a path of the state directory could not be used. `err` is the
/// system error (ENOENT for "not there"), `message` one sentence naming
/// the path.
struct PathError {
  int err = 0;
  std::string message;
  operator Error() const { return Error{message}; }  // NOLINT: implicit by design
};

/// How strictly a state directory is taken.
enum class StateAccess {
  kOwn,       // the daemon: create what is missing, tighten loose modes (logged)
  kReadOnly,  // harnessd runs/sessions: change nothing, refuse loose modes
};

/// Opens the state directory `dir` (an absolute path). Its parents may be
/// links (a HOME often is); the directory itself must be a real folder
/// owned by this user. kOwn creates it and its parents (0700) if missing
/// and tightens a folder that others can write to 0700; kReadOnly refuses
/// such a folder instead.
Expected<UniqueFd, PathError> open_state_dir(const std::string& dir, StateAccess access);

/// Opens `rel` (plain names separated by '/': no "..", no ".", no empty
/// part) beneath `root`, following no link on the way. Every folder on the
/// way and the result must be owned by this user; the result must be a
/// folder when `flags` has O_DIRECTORY, else a regular file. With kOwn, a
/// result that others can write is tightened (0700 or 0600, logged); with
/// kReadOnly it is refused. O_CLOEXEC and O_NOFOLLOW are always added.
Expected<UniqueFd, PathError> open_beneath(int root, const std::string& rel, int flags, mode_t mode = 0600,
                                           StateAccess access = StateAccess::kOwn);

/// Creates the folder `rel` (0700) beneath `root` if it is missing, and
/// checks what is there (a planted link is refused).
Expected<void, PathError> make_dir_beneath(int root, const std::string& rel);

/// Creates `rel` beneath `root` with `content`; it must not exist yet
/// (O_EXCL: a file or link already there is refused, never written through).
Expected<void, PathError> create_file_beneath(int root, const std::string& rel, std::string_view content, bool sync);

/// Replaces `rel` beneath `root` atomically: a new temporary file, then a
/// rename over the old name (which replaces a link, never writes through it).
Expected<void, PathError> replace_file_beneath(int root, const std::string& rel, std::string_view content, bool sync);

/// The same four, in an open folder `dir` (a name `leaf` in it, no '/'),
/// for a caller that keeps its folders open; `rel` names the file in
/// errors. make_dir_in hands back the folder, opened.
Expected<UniqueFd, PathError> open_in(int dir, const std::string& leaf, const std::string& rel, int flags,
                                      mode_t mode = 0600, StateAccess access = StateAccess::kOwn);
Expected<UniqueFd, PathError> make_dir_in(int dir, const std::string& leaf, const std::string& rel);
Expected<void, PathError> create_file_in(int dir, const std::string& leaf, const std::string& rel,
                                         std::string_view content, bool sync);
Expected<void, PathError> replace_file_in(int dir, const std::string& leaf, const std::string& rel,
                                          std::string_view content, bool sync);

/// Reads all of `rel` beneath `root` (err ENOENT when it is missing).
Expected<std::string, PathError> read_beneath(int root, const std::string& rel,
                                              StateAccess access = StateAccess::kOwn);

/// Removes `rel` beneath `root`: a file, a link (the link, never what it
/// points to) or a folder with everything in it, following no link on the
/// way. Missing is no error. Adds the bytes of the regular files removed to
/// `*bytes` when given.
Expected<void, PathError> remove_beneath(int root, const std::string& rel, std::uint64_t* bytes = nullptr);

/// read_jsonl for a file beneath `root`: missing is `missing`; a refused
/// file (a link, another user's) is `missing` too, with `refused` set.
JsonlRead read_jsonl_beneath(int root, const std::string& rel, StateAccess access = StateAccess::kOwn);

}  // namespace harnessd::worker
