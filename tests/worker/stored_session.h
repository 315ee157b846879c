// A session record as the state database of a state directory holds it,
// read through harnessd's own StateDb (tests that check what was saved).
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/state_db.h"
#include "worker/state_dir.h"

namespace harnessd::test {

inline nlohmann::json stored_session(const std::string& state_dir, const std::string& id) {
  auto root = worker::open_state_dir(state_dir, worker::StateAccess::kReadOnly);
  if (!root) throw std::runtime_error(root.error().message);
  auto db = worker::StateDb::open(state_dir, root->get(), {});
  if (!db) throw std::runtime_error(db.error().message);
  auto record = (*db)->session(id);
  if (!record) throw std::runtime_error(record.error().message);
  if (!*record) throw std::runtime_error("no record of session " + id + " in " + state_dir);
  return **record;
}

}  // namespace harnessd::test
