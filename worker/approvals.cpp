#include "worker/approvals.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "acp/json_write.h"
#include "schema/json_parse.h"
#include "worker/inspect.h"
#include "worker/inspect_text.h"
#include "worker/state_db.h"
#include "worker/state_dir.h"

namespace harnessd::worker {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kColumns = "id, scope, session_id, harness, action, kind, command, paths, created_at, run_id";

std::string absolute(const std::string& path, const std::string& cwd) {
  fs::path p = fs::path(path).is_absolute() ? fs::path(path) : fs::path(cwd) / path;
  return p.lexically_normal().string();
}

Approval read_row(Statement& st) {
  Approval a;
  a.id = st.int64(0);
  a.scope = st.text(1);
  a.session_id = st.optional_text(2).value_or("");
  a.harness = st.text(3);
  a.action = st.text(4);
  a.kind = st.text(5);
  a.command = st.optional_text(6);
  if (auto paths = schema::parse_json(st.text(7)); paths && paths->is_array()) {
    for (const json& p : *paths) {
      if (p.is_string()) a.paths.push_back(p.get<std::string>());
    }
  }
  a.created_at = st.text(8);
  a.run_id = st.optional_text(9).value_or("");
  return a;
}

Expected<std::vector<Approval>> read_all(Statement& st) {
  std::vector<Approval> out;
  for (;;) {
    auto row = st.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    out.push_back(read_row(st));
  }
  return out;
}

}  // namespace

json Approval::to_json() const {
  json j = {{"id", id},     {"scope", scope},     {"harness", harness},     {"action", action},
            {"kind", kind}, {"paths", paths},     {"createdAt", created_at}};
  if (scope == "session") j["sessionId"] = session_id;
  if (command) j["command"] = *command;
  if (!run_id.empty()) j["runId"] = run_id;
  return j;
}

Approval approval_for(const harnesses::ToolCallFacts& facts, const std::string& cwd) {
  Approval a;
  a.kind = facts.kind;
  a.command = facts.command;
  for (const auto& p : facts.paths) a.paths.push_back(absolute(p, cwd));
  std::sort(a.paths.begin(), a.paths.end());
  return a;
}

bool covers(const Approval& a, const harnesses::ToolCallFacts& facts, const std::string& cwd) {
  if (a.kind != facts.kind || a.command != facts.command) return false;
  for (const auto& p : facts.paths) {
    if (!std::binary_search(a.paths.begin(), a.paths.end(), absolute(p, cwd))) return false;
    if (a.action == "allow" && !harnesses::inside(p, cwd)) return false;
  }
  // A remembered answer about paths says nothing of a call that names none.
  return !(facts.paths.empty() && !a.paths.empty());
}

Expected<std::vector<Approval>> approvals_for(StateDb& db, const std::string& session_id, const std::string& harness) {
  static const std::string sql = std::string("SELECT ") + kColumns +
                                 " FROM approvals WHERE harness = ?2 AND (scope = 'harness' OR session_id = ?1)"
                                 " ORDER BY id DESC";
  auto st = db.db().cached(sql.c_str());
  if (!st) return std::move(st).error();
  (*st)->bind(1, session_id).bind(2, harness);
  return read_all(**st);
}

Expected<std::vector<Approval>> all_approvals(StateDb& db, const std::optional<std::string>& session_id) {
  static const std::string all = std::string("SELECT ") + kColumns + " FROM approvals ORDER BY id";
  static const std::string one = std::string("SELECT ") + kColumns + " FROM approvals WHERE session_id = ?1 ORDER BY id";
  auto st = db.db().cached(session_id ? one.c_str() : all.c_str());
  if (!st) return std::move(st).error();
  if (session_id) (*st)->bind(1, *session_id);
  return read_all(**st);
}

Expected<std::int64_t> save_approval(StateDb& db, const Approval& a) {
  const std::optional<std::string> session =
      a.scope == "session" ? std::optional<std::string>(a.session_id) : std::nullopt;
  const std::string paths = json(a.paths).dump();
  {
    // The same calls answered again: the newer answer replaces the older.
    auto st = db.db().cached(
        "DELETE FROM approvals WHERE scope = ?1 AND session_id IS ?2 AND harness = ?3 AND kind = ?4 "
        "AND command IS ?5 AND paths = ?6");
    if (!st) return std::move(st).error();
    (*st)->bind(1, a.scope).bind(2, session).bind(3, a.harness).bind(4, a.kind).bind(5, a.command).bind(6, paths);
    if (auto r = (*st)->run(); !r) return std::move(r).error();
  }
  auto st = db.db().cached(
      "INSERT INTO approvals(scope, session_id, harness, action, kind, command, paths, created_at, run_id) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  if (!st) return std::move(st).error();
  (*st)->bind(1, a.scope).bind(2, session).bind(3, a.harness).bind(4, a.action).bind(5, a.kind);
  (*st)->bind(6, a.command).bind(7, paths).bind(8, a.created_at);
  (*st)->bind(9, a.run_id.empty() ? std::nullopt : std::optional<std::string>(a.run_id));
  if (auto r = (*st)->run(); !r) return std::move(r).error();
  return db.db().last_insert_rowid();
}

Expected<bool> forget_approval(StateDb& db, std::int64_t id) {
  auto st = db.db().cached("DELETE FROM approvals WHERE id = ?1");
  if (!st) return std::move(st).error();
  (*st)->bind(1, id);
  if (auto r = (*st)->run(); !r) return std::move(r).error();
  return db.db().changes() > 0;
}

Expected<std::size_t> forget_session_approvals(StateDb& db, const std::string& session_id) {
  auto st = db.db().cached("DELETE FROM approvals WHERE session_id = ?1");
  if (!st) return std::move(st).error();
  (*st)->bind(1, session_id);
  if (auto r = (*st)->run(); !r) return std::move(r).error();
  return static_cast<std::size_t>(db.db().changes());
}

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "harnessd: %s\n", message.c_str());
  return 1;
}

// A session's id from its id, name or host's name; exactly one must match.
Expected<std::string> session_id_of(StateDb& db, const std::string& ref) {
  auto records = session_records(db);
  if (records.count(ref)) return ref;
  std::vector<std::string> ids;
  for (const auto& [id, r] : records) {
    if (r.name == ref || r.host_session == ref) ids.push_back(id);
  }
  if (ids.empty()) return Error{"no session has the id, name or host name '" + ref + "'"};
  if (ids.size() > 1) return Error{"several sessions are called '" + ref + "'; name one by id"};
  return ids.front();
}

}  // namespace

int approvals_command(const std::string& state_dir, const std::optional<std::string>& session,
                      const std::optional<std::string>& forget, const std::string& format) {
  auto root = open_state_dir(state_dir, forget ? StateAccess::kOwn : StateAccess::kReadOnly);
  if (!root) {
    if (root.error().err == ENOENT && !forget) {
      std::printf(format == "json" ? "{\"approvals\":[]}\n" : "no approvals remembered\n");
      return 0;
    }
    return fail(root.error().message);
  }
  auto db = open_state_db(state_dir, root->get());
  if (!db) return fail(db.error().message);
  if (!*db) {
    if (forget) return fail("no approvals remembered");
    std::printf(format == "json" ? "{\"approvals\":[]}\n" : "no approvals remembered\n");
    return 0;
  }
  std::optional<std::string> session_id;
  if (session) {
    auto id = session_id_of(**db, *session);
    if (!id) return fail(id.error().message);
    session_id = *id;
  }
  if (forget) {
    // Written in one transaction, as a daemon writes; a running daemon
    // reads approvals at every request, so it sees the change at once.
    if (auto r = (*db)->db().exec("BEGIN IMMEDIATE"); !r) return fail(r.error().message);
    std::size_t gone = 0;
    if (*forget == "all") {
      if (!session_id) {
        (void)(*db)->db().exec("ROLLBACK");
        return fail("--forget all needs --session (forget one approval by its id otherwise)");
      }
      auto n = forget_session_approvals(**db, *session_id);
      if (!n) return fail(n.error().message);
      gone = *n;
    } else {
      char* end = nullptr;
      const long long id = std::strtoll(forget->c_str(), &end, 10);
      if (forget->empty() || *end || id <= 0) {
        (void)(*db)->db().exec("ROLLBACK");
        return fail("--forget takes an approval's id (see `harnessd approvals`) or \"all\" with --session");
      }
      auto found = forget_approval(**db, id);
      if (!found) return fail(found.error().message);
      if (!*found) {
        (void)(*db)->db().exec("ROLLBACK");
        return fail("no approval has the id " + *forget);
      }
      gone = 1;
    }
    if (auto r = (*db)->db().exec("COMMIT"); !r) return fail(r.error().message);
    if (format == "json") {
      std::printf("%s\n", json({{"forgotten", gone}}).dump().c_str());
    } else {
      std::printf("forgot %zu approval%s\n", gone, gone == 1 ? "" : "s");
    }
    return 0;
  }
  auto list = all_approvals(**db, session_id);
  if (!list) return fail(list.error().message);
  if (format == "json") {
    json out = json::array();
    for (const auto& a : *list) out.push_back(a.to_json());
    std::printf("%s\n", json({{"approvals", out}}).dump().c_str());
    return 0;
  }
  if (list->empty()) {
    std::printf("no approvals remembered\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "ACTION", "SCOPE", "HARNESS", "KIND", "MATCHES", "SINCE"}};
  for (const auto& a : *list) {
    std::string matches = a.command ? "command " + *a.command : "";
    for (const auto& p : a.paths) matches += (matches.empty() ? "" : " ") + p;
    if (matches.empty()) matches = "any call of its kind";
    rows.push_back({std::to_string(a.id), a.action, a.scope == "session" ? "session " + a.session_id : "harness",
                    a.harness, a.kind.empty() ? "-" : a.kind, matches, a.created_at});
  }
  print_table(rows);
  return 0;
}

}  // namespace harnessd::worker
