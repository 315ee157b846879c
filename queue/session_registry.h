// SessionRegistry: session ids, optional unique names, open or closed.
// A name belongs to at most one open session at a time.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

namespace harnessd::queue {

/// T is the live session object; the registry owns it while it is open.
/// Entries are kept in id order (ids sort by creation time).
template <class T>
class SessionRegistry {
 public:
  struct Entry {
    std::optional<std::string> name;
    std::unique_ptr<T> value;  // null once closed
    bool open() const { return value != nullptr; }
  };

  /// Adds an open session. If `name` belonged to another open session, that
  /// session loses the name and its id is returned (the caller closes it).
  std::optional<std::string> add(const std::string& id, std::optional<std::string> name, std::unique_ptr<T> value) {
    std::optional<std::string> displaced;
    if (name) {
      auto it = names_.find(*name);
      if (it != names_.end()) {
        displaced = it->second;
        entries_[it->second].name.reset();
      }
      names_[*name] = id;
    }
    entries_[id] = Entry{std::move(name), std::move(value)};
    return displaced;
  }

  /// The open session with this id, or null.
  T* find(const std::string& id) const {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second.value.get();
  }
  /// The id of the open session that holds `name`.
  std::optional<std::string> find_name(const std::string& name) const {
    auto it = names_.find(name);
    if (it == names_.end()) return std::nullopt;
    return it->second;
  }
  /// True if the id was known, open or closed.
  bool known(const std::string& id) const { return entries_.count(id) != 0; }

  /// Closes the session: frees its name and hands the object back.
  std::unique_ptr<T> close(const std::string& id) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return nullptr;
    if (it->second.name) {
      auto n = names_.find(*it->second.name);
      if (n != names_.end() && n->second == id) names_.erase(n);
    }
    return std::move(it->second.value);
  }

  /// Open sessions in id order: fn(id, name, T&).
  template <class Fn>
  void for_each_open(Fn&& fn) const {
    for (const auto& [id, e] : entries_) {
      if (e.open()) fn(id, e.name, *e.value);
    }
  }
  /// The first open session after `after` (or the first one), for paging.
  const std::map<std::string, Entry>& entries() const { return entries_; }
  std::size_t open_count() const {
    std::size_t n = 0;
    for (const auto& [id, e] : entries_) n += e.open() ? 1 : 0;
    return n;
  }

 private:
  std::map<std::string, Entry> entries_;
  std::unordered_map<std::string, std::string> names_;
};

}  // namespace harnessd::queue
