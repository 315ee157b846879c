// Building the template's data from a prompt, a context and a history.
#include "harnesses/packaging.h"

namespace harnessd::harnesses {

using nlohmann::json;

namespace {

std::string base64_decode(const std::string& in) {
  static const std::string kChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    auto pos = kChars.find(c);
    if (pos == std::string::npos) continue;  // padding, whitespace
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

// A file name from a URI's last part, with only safe characters.
std::string file_name(const std::string& uri, const std::string& fallback) {
  std::string base = uri.substr(uri.find_last_of('/') + 1);
  std::string out;
  for (char c : base) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ? c : '_');
  if (out.empty() || out.find_first_not_of('.') == std::string::npos) out = fallback;
  return out.substr(0, 80);
}

std::string extension(const std::string& mime) {
  if (mime == "image/png") return ".png";
  if (mime == "image/jpeg") return ".jpg";
  if (mime == "image/gif") return ".gif";
  if (mime == "image/webp") return ".webp";
  return ".bin";
}

std::string path_of(const std::string& uri) { return uri.rfind("file://", 0) == 0 ? uri.substr(7) : ""; }

}  // namespace

std::string prompt_task(const json& blocks) {
  std::string task;
  for (const auto& b : blocks) {
    if (b.value("type", "") != "text") continue;
    if (!task.empty()) task += "\n\n";
    task += b.value("text", "");
  }
  return task;
}

Packaged package_prompt(const Template& tmpl, const PackageInput& in) {
  Packaged out;
  json references = json::array();
  int n = 0;
  auto save = [&](const std::string& rel, std::string bytes) -> std::string {
    if (in.run_dir.empty()) return "<run folder>/" + rel;  // pack: nothing is written
    out.files.push_back({rel, std::move(bytes)});
    return in.run_dir + "/" + rel;
  };
  for (const auto& b : in.blocks) {
    std::string type = b.value("type", "");
    if (type == "resource_link") {
      json ref = {{"uri", b.value("uri", "")}, {"title", b.value("title", b.value("name", ""))}};
      if (auto p = path_of(b.value("uri", "")); !p.empty()) ref["path"] = p;
      references.push_back(ref);
    } else if (type == "resource" && b.contains("resource")) {
      const json& r = b["resource"];
      std::string uri = r.value("uri", "");
      json ref = {{"uri", uri}, {"title", file_name(uri, "resource")}};
      if (r.contains("text")) {
        std::string text = r.value("text", "");
        if (text.size() <= kInlineResourceChars) {
          ref["content"] = text;
          if (auto p = path_of(uri); !p.empty()) ref["path"] = p;
        } else {
          ref["path"] = save("references/" + std::to_string(++n) + "-" + file_name(uri, "resource.txt"), text);
        }
      } else if (r.contains("blob")) {
        ref["path"] = save("references/" + std::to_string(++n) + "-" + file_name(uri, "resource.bin"),
                           base64_decode(r.value("blob", "")));
      }
      references.push_back(ref);
    } else if (type == "image") {
      std::string mime = b.value("mimeType", "image");
      std::string rel = "images/" + std::to_string(++n) + extension(mime);
      references.push_back({{"path", save(rel, base64_decode(b.value("data", "")))}, {"title", "image, " + mime}});
    }
  }
  // A field given as null counts as absent.
  json context = json::object();
  if (in.context.is_object()) {
    for (auto& [key, value] : in.context.items()) {
      if (!value.is_null()) context[key] = value;
    }
  }
  for (const auto& r : context.value("references", json::array())) {
    references.push_back(r.is_string() ? json{{"path", r}} : r);
  }
  json data = {{"task", prompt_task(in.blocks)},
               {"background", context.value("background", "")},
               {"constraints", context.value("constraints", json::array())},
               {"acceptance", context.value("acceptance", json::array())},
               {"outputContract", context.value("outputContract", "")},
               {"vars", context.value("vars", json::object())},
               {"references", references},
               {"history", in.history.is_array() ? in.history : json::array()},
               {"summary", in.summary},
               {"workspace", in.workspace},
               {"harness", in.harness},
               {"session", in.session}};
  out.text = tmpl.render(data);
  out.data = std::move(data);
  return out;
}

}  // namespace harnessd::harnesses
