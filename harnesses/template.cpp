// The template language: {{name}}, {{#section name [budget=N]}}, {{#each
// list}}, {{#if value}}, {{#unless value}}, {{budget N}}, {{! comment}}.
// A line holding only a block tag leaves no blank line behind. A section
// whose values are all empty drops out. Budgets are counted in characters
// (Unicode code points).
#include "harnesses/template.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>


namespace harnessd::harnesses {

using nlohmann::json;

struct Template::Node {
  enum class Kind { kText, kVar, kSection, kEach, kIf, kUnless } kind = Kind::kText;
  std::string text;  // literal text, or the value path
  std::size_t budget = 0;
  std::vector<Node> children;
  std::set<std::string> lists;  // sections: the lists iterated inside
};

namespace {

using Node = Template::Node;

std::size_t count_chars(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

// The first `chars` characters of `s`.
std::string take_chars(const std::string& s, std::size_t chars) {
  std::size_t i = 0, n = 0;
  while (i < s.size() && n < chars) {
    ++i;
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) ++i;
    ++n;
  }
  return s.substr(0, i);
}

std::string with_commas(std::size_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

// Cuts `text` to `budget` characters, marking what went.
std::string hard_cut(const std::string& text, std::size_t budget) {
  std::size_t total = count_chars(text);
  if (total <= budget) return text;
  std::string marker = "\n[... " + with_commas(total) + " characters cut to fit a budget of " + with_commas(budget) +
                       " ...]\n";
  std::size_t keep = budget > count_chars(marker) ? budget - count_chars(marker) : 0;
  return take_chars(text, keep) + marker;
}

// ---------------------------------------------------------------- parsing

struct Tag {
  std::size_t start, end;  // of "{{...}}" in the text
  std::string body;        // trimmed
};

bool is_block(const std::string& body) {
  return !body.empty() && (body[0] == '#' || body[0] == '/' || body[0] == '!' || body.rfind("budget ", 0) == 0);
}

std::string trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

struct Parser {
  const std::string& text;
  const std::string& name;
  std::size_t budget = 0;

  int line_of(std::size_t pos) const { return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(pos), '\n')); }

  Expected<std::vector<Node>> run() {
    std::vector<Tag> tags;
    std::size_t pos = 0;
    while ((pos = text.find("{{", pos)) != std::string::npos) {
      std::size_t end = text.find("}}", pos);
      if (end == std::string::npos) return Error{name + ":" + std::to_string(line_of(pos)) + ": '{{' is never closed"};
      tags.push_back({pos, end + 2, trim(text.substr(pos + 2, end - pos - 2))});
      pos = end + 2;
    }
    // A block tag alone on its line takes the whole line with it.
    for (auto& t : tags) {
      if (!is_block(t.body)) continue;
      std::size_t ls = t.start;
      while (ls > 0 && (text[ls - 1] == ' ' || text[ls - 1] == '\t')) --ls;
      if (ls != 0 && text[ls - 1] != '\n') continue;
      std::size_t le = t.end;
      while (le < text.size() && (text[le] == ' ' || text[le] == '\t' || text[le] == '\r')) ++le;
      if (le < text.size() && text[le] != '\n') continue;
      t.start = ls;
      t.end = le < text.size() ? le + 1 : le;
    }
    std::vector<std::vector<Node>*> stack;
    std::vector<Node> root;
    std::vector<Node*> open;  // the block nodes being filled
    stack.push_back(&root);
    std::size_t cursor = 0;
    for (const auto& t : tags) {
      if (t.start > cursor) stack.back()->push_back(Node{Node::Kind::kText, text.substr(cursor, t.start - cursor), 0, {}, {}});
      cursor = t.end;
      const std::string& b = t.body;
      std::string where = name + ":" + std::to_string(line_of(t.start)) + ": ";
      if (b.empty()) return Error{where + "empty tag"};
      if (b[0] == '!') continue;
      if (b.rfind("budget ", 0) == 0) {
        try {
          budget = std::stoul(b.substr(7));
        } catch (...) {
          return Error{where + "budget needs a number of characters"};
        }
        continue;
      }
      if (b[0] == '#') {
        std::istringstream words(b.substr(1));
        std::string kind, arg, option;
        words >> kind >> arg;
        Node node;
        if (kind == "section") {
          node.kind = Node::Kind::kSection;
        } else if (kind == "each") {
          node.kind = Node::Kind::kEach;
        } else if (kind == "if") {
          node.kind = Node::Kind::kIf;
        } else if (kind == "unless") {
          node.kind = Node::Kind::kUnless;
        } else {
          return Error{where + "unknown block '#" + kind + "'"};
        }
        if (arg.empty()) return Error{where + "'#" + kind + "' needs a name"};
        node.text = arg;
        while (words >> option) {
          if (node.kind == Node::Kind::kSection && option.rfind("budget=", 0) == 0) {
            try {
              node.budget = std::stoul(option.substr(7));
            } catch (...) {
              return Error{where + "budget= needs a number of characters"};
            }
          } else {
            return Error{where + "unknown option '" + option + "'"};
          }
        }
        stack.back()->push_back(std::move(node));
        Node* added = &stack.back()->back();
        open.push_back(added);
        stack.push_back(&added->children);
        continue;
      }
      if (b[0] == '/') {
        std::string kind = trim(b.substr(1));
        if (open.empty()) return Error{where + "'/" + kind + "' closes nothing"};
        static const std::map<Node::Kind, std::string> kNames = {{Node::Kind::kSection, "section"},
                                                                 {Node::Kind::kEach, "each"},
                                                                 {Node::Kind::kIf, "if"},
                                                                 {Node::Kind::kUnless, "unless"}};
        if (kNames.at(open.back()->kind) != kind) {
          return Error{where + "'/" + kind + "' closes '#" + kNames.at(open.back()->kind) + "'"};
        }
        open.pop_back();
        stack.pop_back();
        continue;
      }
      stack.back()->push_back(Node{Node::Kind::kVar, b, 0, {}, {}});
    }
    if (cursor < text.size()) stack.back()->push_back(Node{Node::Kind::kText, text.substr(cursor), 0, {}, {}});
    if (!open.empty()) return Error{name + ": '#" + open.back()->text + "' is never closed"};
    collect_lists(root);
    return root;
  }

  // Sections learn which lists they iterate, for trimming.
  static std::set<std::string> collect_lists(std::vector<Node>& nodes) {
    std::set<std::string> all;
    for (auto& n : nodes) {
      auto inner = collect_lists(n.children);
      if (n.kind == Node::Kind::kEach) inner.insert(n.text);
      if (n.kind == Node::Kind::kSection) n.lists = inner;
      all.insert(inner.begin(), inner.end());
    }
    return all;
  }
};

// ---------------------------------------------------------------- rendering

struct Scope {
  const json* value;
  const Scope* parent;
};

const json* lookup(const std::string& path, const Scope* scope) {
  if (path == ".") return scope->value;
  for (const Scope* s = scope; s; s = s->parent) {
    const json* cur = s->value;
    std::size_t start = 0;
    bool found = true;
    while (start <= path.size()) {
      std::size_t dot = path.find('.', start);
      std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!cur->is_object() || !cur->contains(key)) {
        found = false;
        break;
      }
      cur = &(*cur)[key];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (found) return cur;
  }
  return nullptr;
}

bool truthy(const json* v) {
  if (!v || v->is_null()) return false;
  if (v->is_string()) return !v->get_ref<const std::string&>().empty();
  if (v->is_array() || v->is_object()) return !v->empty();
  if (v->is_boolean()) return v->get<bool>();
  return true;
}

std::string as_text(const json* v) {
  if (!v || v->is_null()) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_array()) {
    std::string out;
    for (const auto& item : *v) {
      if (!out.empty()) out += ", ";
      out += item.is_string() ? item.get<std::string>() : item.dump();
    }
    return out;
  }
  return v->dump();
}

struct SectionReport {
  std::size_t chars = 0;
  std::size_t budget = 0;
  std::set<std::string> lists;
};

struct Renderer {
  const json& data;
  bool cut_sections;  // final pass: sections over budget are cut
  std::map<std::string, SectionReport> sections;

  // Renders nodes; returns whether any value inside was non-empty.
  bool render(const std::vector<Node>& nodes, const Scope* scope, std::string& out) {
    bool content = false;
    for (const auto& n : nodes) {
      switch (n.kind) {
        case Node::Kind::kText:
          out += n.text;
          break;
        case Node::Kind::kVar: {
          std::string v = as_text(lookup(n.text, scope));
          content = content || !v.empty();
          out += v;
          break;
        }
        case Node::Kind::kIf:
        case Node::Kind::kUnless: {
          bool yes = truthy(lookup(n.text, scope));
          if (yes == (n.kind == Node::Kind::kIf)) {
            bool inner = render(n.children, scope, out);
            // An #unless block is a deliberate fallback: it counts as content.
            content = content || inner || n.kind == Node::Kind::kUnless;
          }
          break;
        }
        case Node::Kind::kEach: {
          const json* list = lookup(n.text, scope);
          // A marker where items were left out to fit a budget.
          if (data.contains("_trimmed") && data["_trimmed"].contains(n.text)) {
            const json& t = data["_trimmed"][n.text];
            out += "[... " + std::to_string(t.value("count", 0)) + " earlier " + t.value("what", std::string("items")) +
                   " left out to fit the budget (" + with_commas(t.value("chars", 0)) + " characters) ...]\n";
            content = true;
          }
          if (!list || !list->is_array()) break;
          for (const auto& item : *list) {
            Scope inner{&item, scope};
            content = render(n.children, &inner, out) || content;
          }
          break;
        }
        case Node::Kind::kSection: {
          std::string body;
          bool has = render(n.children, scope, body);
          if (!has) break;  // every value in it was empty: the section drops out
          SectionReport& r = sections[n.text];
          r.chars = count_chars(body);
          r.budget = n.budget;
          r.lists = n.lists;
          if (cut_sections && n.budget && r.chars > n.budget) body = hard_cut(body, n.budget);
          out += body;
          content = true;
          break;
        }
      }
    }
    return content;
  }
};

}  // namespace

Expected<Template> Template::parse(const std::string& text, const std::string& name) {
  Parser parser{text, name};
  auto nodes = parser.run();
  if (!nodes) return nodes.error();
  Template t;
  t.name_ = name;
  t.budget_ = parser.budget;
  t.nodes_ = std::make_shared<const std::vector<Node>>(std::move(*nodes));
  return t;
}

std::string Template::render(const json& input) const {
  json data = input.is_object() ? input : json::object();
  // `_trimmed` and a reference's `_cut` are the trimming's own marks: any
  // that came with the input (a host's context may carry any key) go, so
  // that every mark read below is one written here, of the type written.
  data.erase("_trimmed");
  if (auto refs = data.find("references"); refs != data.end() && refs->is_array()) {
    for (auto& ref : *refs) {
      if (ref.is_object()) ref.erase("_cut");
    }
  }
  // Trim until every budget holds: the oldest history first, then the
  // largest reference contents; each cut leaves a marker.
  for (int round = 0; round < 10000; ++round) {
    Renderer r{data, false, {}};
    std::string out;
    Scope root{&data, nullptr};
    r.render(*nodes_, &root, out);
    std::set<std::string> lists;
    bool over = budget_ && count_chars(out) > budget_;
    if (over) lists = {"history", "references"};
    for (const auto& [name, s] : r.sections) {
      if (s.budget && s.chars > s.budget) lists.insert(s.lists.begin(), s.lists.end());
    }
    if (lists.empty()) break;
    bool trimmed = false;
    if (lists.count("history") && data.contains("history") && data["history"].is_array() && !data["history"].empty()) {
      json& history = data["history"];
      json& t = data["_trimmed"]["history"];
      t["what"] = "turns";
      t["count"] = t.value("count", 0) + 1;
      t["chars"] = t.value("chars", 0) + count_chars(history[0].dump());
      history.erase(history.begin());
      trimmed = true;
    } else if (lists.count("references") && data.contains("references") && data["references"].is_array()) {
      json* largest = nullptr;
      std::size_t size = 0;
      for (auto& ref : data["references"]) {
        if (!ref.is_object() || !ref.contains("content") || !ref["content"].is_string() || ref.value("_cut", false)) {
          continue;
        }
        std::size_t n = count_chars(ref["content"].get_ref<const std::string&>());
        if (n > size) {
          size = n;
          largest = &ref;
        }
      }
      if (largest) {
        std::string where = largest->value("path", largest->value("uri", std::string("the reference")));
        (*largest)["content"] = "[... content left out to fit the budget (" + with_commas(size) +
                                " characters); read it from " + where + " ...]";
        (*largest)["_cut"] = true;
        trimmed = true;
      }
    }
    if (!trimmed) break;  // nothing left to trim: the hard cut below does the rest
  }
  Renderer final_pass{data, true, {}};
  std::string out;
  Scope root{&data, nullptr};
  final_pass.render(*nodes_, &root, out);
  if (budget_) out = hard_cut(out, budget_);
  return out;
}

Expected<Template> load_template(const std::string& name, const std::string& user_dir) {
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return Error{"template name '" + name + "' may only use letters, digits, '-' and '_'"};
    }
  }
  if (!user_dir.empty()) {
    std::ifstream in(user_dir + "/" + name + ".tmpl");
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      return Template::parse(ss.str(), user_dir + "/" + name + ".tmpl");
    }
  }
  if (const char* text = builtin_template_text(name)) return Template::parse(text, name);
  std::string known;
  for (const auto& n : builtin_template_names()) known += (known.empty() ? "" : ", ") + n;
  return Error{"no template named '" + name + "' (built-in: " + known + ")"};
}

}  // namespace harnessd::harnesses
