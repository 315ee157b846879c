// Opening beneath a directory descriptor, one component at a time with
// O_NOFOLLOW, and the ownership and mode checks of everything opened.
#include "worker/state_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "acp/log.h"

namespace harnessd::worker {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

constexpr mode_t kOthersWrite = S_IWGRP | S_IWOTH;

PathError sys_error(const std::string& rel, int err) { return PathError{err, rel + ": " + std::strerror(err)}; }

// Why `name` in `dir` could not be opened: a link or something else that
// harnessd does not make is named as such, anything else by its errno.
PathError describe_failure(int dir, const char* name, const std::string& rel, int err) {
  struct stat st {};
  if (err != ENOENT && ::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return PathError{ELOOP, rel + " is a symbolic link; refused (harnessd follows no link in its state directory)"};
    }
    if (err == EEXIST) return PathError{EEXIST, rel + " already exists; refused"};
    if (err == ENOTDIR) return PathError{ENOTDIR, rel + " is not a folder; refused"};
  }
  return sys_error(rel, err);
}

// The checks every opened file or folder passes: its kind, its owner, and
// that nobody else can write to it.
Expected<void, PathError> check_opened(int fd, const std::string& rel, bool want_dir, StateAccess access) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return sys_error(rel, errno);
  if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    return PathError{want_dir ? ENOTDIR : EINVAL,
                     rel + (want_dir ? " is not a folder; refused" : " is not a regular file; refused")};
  }
  if (st.st_uid != ::geteuid()) {
    return PathError{EPERM, rel + " belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
                                std::to_string(::geteuid()) + "); refused"};
  }
  if (st.st_mode & kOthersWrite) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    if (access == StateAccess::kReadOnly) {
      return PathError{EPERM, rel + " can be written by other users (mode " + mode + "); refused (chmod go-w, or "
                              "start the daemon once, which tightens it)"};
    }
    mode_t tight = want_dir ? 0700 : 0600;
    if (::fchmod(fd, tight) != 0) return sys_error(rel, errno);
    acp::log::warn(rel + " could be written by other users (mode " + mode + "); tightened to " +
                   (want_dir ? "0700" : "0600"));
  }
  return {};
}

// The parts of a relative path, or an error for anything but plain names.
Expected<std::vector<std::string>, PathError> split(const std::string& rel) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= rel.size()) {
    std::size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    std::string part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return PathError{EINVAL, rel + " is not a plain relative path"};
    parts.push_back(std::move(part));
    start = end + 1;
  }
  return parts;
}

// Opens the folder holding the last part of `rel`; `leaf` gets that part.
Expected<UniqueFd, PathError> open_parent(int root, const std::string& rel, std::string* leaf) {
  auto parts = split(rel);
  if (!parts) return parts.error();
  UniqueFd dir(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!dir) return sys_error(rel, errno);
  std::string walked;
  for (std::size_t i = 0; i + 1 < parts->size(); ++i) {
    const std::string& part = (*parts)[i];
    walked += (walked.empty() ? "" : "/") + part;
    int fd = ::openat(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return describe_failure(dir.get(), part.c_str(), walked, errno);
    UniqueFd next(fd);
    // Folders on the way are checked, never changed.
    if (auto ok = check_opened(next.get(), walked, true, StateAccess::kReadOnly); !ok) return ok.error();
    dir = std::move(next);
  }
  *leaf = parts->back();
  return dir;
}

}  // namespace

Expected<UniqueFd, PathError> open_state_dir(const std::string& dir, StateAccess access) {
  if (dir.empty() || dir.front() != '/') return PathError{EINVAL, "the state directory " + dir + " is not absolute"};
  std::string path = dir;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (access == StateAccess::kOwn) {
    // Parents as the user has them (links included), made 0700 if missing.
    for (std::size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
      std::string partial = path.substr(0, pos);
      if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
        return PathError{errno, "cannot create " + partial + ": " + std::strerror(errno)};
      }
    }
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      return PathError{errno, "cannot create the state directory " + path + ": " + std::strerror(errno)};
    }
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      return PathError{ELOOP, "the state directory " + path +
                                  " is a symbolic link; refused (give the folder it points to instead)"};
    }
    return PathError{err, "cannot open the state directory " + path + ": " + std::strerror(err)};
  }
  UniqueFd root(fd);
  if (auto ok = check_opened(root.get(), "the state directory " + path, true, access); !ok) return ok.error();
  return root;
}

Expected<UniqueFd, PathError> open_in(int dir, const std::string& leaf, const std::string& rel, int flags, mode_t mode,
                                      StateAccess access) {
  const bool want_dir = (flags & O_DIRECTORY) != 0;
  // O_NONBLOCK: a planted FIFO must not block the open; it is refused below.
  int fd = ::openat(dir, leaf.c_str(), flags | O_NOFOLLOW | O_CLOEXEC | (want_dir ? 0 : O_NONBLOCK), mode);
  if (fd < 0) return describe_failure(dir, leaf.c_str(), rel, errno);
  UniqueFd out(fd);
  if (auto ok = check_opened(out.get(), rel, want_dir, access); !ok) return ok.error();
  if (!want_dir) {
    int fl = ::fcntl(out.get(), F_GETFL);
    if (fl >= 0) (void)::fcntl(out.get(), F_SETFL, fl & ~O_NONBLOCK);
  }
  return out;
}

Expected<UniqueFd, PathError> open_beneath(int root, const std::string& rel, int flags, mode_t mode,
                                           StateAccess access) {
  std::string leaf;
  auto parent = open_parent(root, rel, &leaf);
  if (!parent) return parent.error();
  return open_in(parent->get(), leaf, rel, flags, mode, access);
}

Expected<UniqueFd, PathError> make_dir_in(int dir, const std::string& leaf, const std::string& rel) {
  if (::mkdirat(dir, leaf.c_str(), 0700) != 0 && errno != EEXIST) return sys_error(rel, errno);
  // Whatever is there now must be our folder, not a link to another.
  return open_in(dir, leaf, rel, O_RDONLY | O_DIRECTORY, 0, StateAccess::kOwn);
}

Expected<void, PathError> make_dir_beneath(int root, const std::string& rel) {
  std::string leaf;
  auto parent = open_parent(root, rel, &leaf);
  if (!parent) return parent.error();
  if (auto made = make_dir_in(parent->get(), leaf, rel); !made) return made.error();
  return {};
}

namespace {

Expected<void, PathError> write_new(int dir, const std::string& name, const std::string& rel, std::string_view content,
                                    bool sync) {
  int fd = ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return describe_failure(dir, name.c_str(), rel, errno);
  UniqueFd file(fd);
  int err = acp::write_all(file.get(), content);
  if (!err && sync && ::fdatasync(file.get()) != 0) err = errno;
  if (err) {
    file.reset();
    ::unlinkat(dir, name.c_str(), 0);  // nothing half-written stays
    return sys_error(rel, err);
  }
  return {};
}

}  // namespace

Expected<void, PathError> create_file_in(int dir, const std::string& leaf, const std::string& rel,
                                         std::string_view content, bool sync) {
  return write_new(dir, leaf, rel, content, sync);
}

Expected<void, PathError> create_file_beneath(int root, const std::string& rel, std::string_view content, bool sync) {
  std::string leaf;
  auto parent = open_parent(root, rel, &leaf);
  if (!parent) return parent.error();
  return write_new(parent->get(), leaf, rel, content, sync);
}

Expected<void, PathError> replace_file_in(int dir, const std::string& leaf, const std::string& rel,
                                          std::string_view content, bool sync) {
  std::string tmp = leaf + ".tmp";
  // A temporary file left by a crash (or anything planted under its name)
  // goes first; unlinkat removes a link itself, never its target.
  ::unlinkat(dir, tmp.c_str(), 0);
  if (auto w = write_new(dir, tmp, rel + ".tmp", content, sync); !w) return w;
  if (::renameat(dir, tmp.c_str(), dir, leaf.c_str()) != 0) {
    int err = errno;
    ::unlinkat(dir, tmp.c_str(), 0);
    return describe_failure(dir, leaf.c_str(), rel, err);
  }
  return {};
}

Expected<void, PathError> replace_file_beneath(int root, const std::string& rel, std::string_view content, bool sync) {
  std::string leaf;
  auto parent = open_parent(root, rel, &leaf);
  if (!parent) return parent.error();
  return replace_file_in(parent->get(), leaf, rel, content, sync);
}

Expected<std::string, PathError> read_beneath(int root, const std::string& rel, StateAccess access) {
  auto fd = open_beneath(root, rel, O_RDONLY, 0, access);
  if (!fd) return fd.error();
  std::string content;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(rel, errno);
    if (n == 0) break;
    content.append(buf, static_cast<std::size_t>(n));
  }
  return content;
}

JsonlRead read_jsonl_beneath(int root, const std::string& rel, StateAccess access) {
  auto content = read_beneath(root, rel, access);
  if (!content) {
    JsonlRead out;
    out.missing = true;
    if (content.error().err != ENOENT) out.refused = content.error().message;
    return out;
  }
  return parse_jsonl(*content);
}

namespace {

// Empties the open folder `dir` (named `rel` in errors) and closes it.
Expected<void, PathError> empty_folder(int dir, const std::string& rel, std::uint64_t* bytes) {
  DIR* d = ::fdopendir(dir);
  if (!d) {
    int err = errno;
    ::close(dir);
    return sys_error(rel, err);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  Expected<void, PathError> result;
  for (const auto& name : names) {
    struct stat st {};
    if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      int sub = ::openat(::dirfd(d), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        result = sys_error(rel + "/" + name, errno);
        continue;
      }
      if (auto r = empty_folder(sub, rel + "/" + name, bytes); !r) result = r;
      if (::unlinkat(::dirfd(d), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        result = sys_error(rel + "/" + name, errno);
      }
      continue;
    }
    if (::unlinkat(::dirfd(d), name.c_str(), 0) != 0) {
      if (errno != ENOENT) result = sys_error(rel + "/" + name, errno);
    } else if (bytes && S_ISREG(st.st_mode)) {
      *bytes += static_cast<std::uint64_t>(st.st_size);
    }
  }
  ::closedir(d);
  return result;
}

}  // namespace

Expected<void, PathError> remove_beneath(int root, const std::string& rel, std::uint64_t* bytes) {
  std::string leaf;
  auto parent = open_parent(root, rel, &leaf);
  if (!parent) return parent.error().err == ENOENT ? Expected<void, PathError>{} : parent.error();
  struct stat st {};
  if (::fstatat(parent->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? Expected<void, PathError>{} : sys_error(rel, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(parent->get(), leaf.c_str(), 0) != 0 && errno != ENOENT) return sys_error(rel, errno);
    if (bytes && S_ISREG(st.st_mode)) *bytes += static_cast<std::uint64_t>(st.st_size);
    return {};
  }
  int dir = ::openat(parent->get(), leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return sys_error(rel, errno);
  auto emptied = empty_folder(dir, rel, bytes);
  if (::unlinkat(parent->get(), leaf.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return sys_error(rel, errno);
  return emptied;
}

}  // namespace harnessd::worker
