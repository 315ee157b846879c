// Templates for packaging a task and its context into one prompt, for
// harnesses that take a single task (and for any prompt that asks for a
// template). The syntax and the trimming order are in docs/packaging.md.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "schema/expected.h"

namespace harnessd::harnesses {

/// A parsed template. Rendering is deterministic: the same template and
/// data give the same bytes.
class Template {
 public:
  /// Parses template text; errors name the line.
  static Expected<Template> parse(const std::string& text, const std::string& name);

  /// Renders `data` (see docs/packaging.md for its fields), trimming to the
  /// budgets: oldest history first, then the largest references' content,
  /// then a hard cut; every cut is marked in the text.
  std::string render(const nlohmann::json& data) const;

  const std::string& name() const { return name_; }
  /// The template-wide budget in characters (0: none).
  std::size_t budget() const { return budget_; }

  struct Node;

 private:
  std::string name_;
  std::size_t budget_ = 0;
  std::shared_ptr<const std::vector<Node>> nodes_;
};

/// The names of the built-in templates: single-shot, openspace, plain.
std::vector<std::string> builtin_template_names();
/// The text of a built-in template, or nothing.
const char* builtin_template_text(const std::string& name);

/// Finds a template: `<dir>/<name>.tmpl` in the user's template folder
/// first (when `dir` is not empty), then the built-ins.
Expected<Template> load_template(const std::string& name, const std::string& user_dir);

}  // namespace harnessd::harnesses
