// fuzz_context: the packaging context, both ways it arrives. The input is
// (1) the file of `harnessd pack --context`, read and checked by the
// wrapper and packaged with the built-in templates, and (2) when it is
// JSON, `_meta.harnessd.context` of a session/prompt, decoded, checked
// and packaged by package_prompt with each built-in template.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "harnesses/packaging.h"
#include "harnesses/template.h"
#include "schema/acp.h"
#include "schema/json_parse.h"
#include "worker/config.h"
#include "worker/wrapper.h"

namespace {

using nlohmann::json;
using namespace harnessd;

const worker::Config& config() {
  static const worker::Config c = [] {
    auto parsed = worker::parse_config("", "/nonexistent/harnessd-fuzz/config.toml");
    if (!parsed) fuzz::fail("the default config does not parse");
    return *parsed;
  }();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_stdout();  // `harnessd pack` prints the packaged prompt on stdout.
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(bytes), size);
  const std::string file = fuzz::scratch_dir() + "/context.json";
  fuzz::write_file(file, input);
  worker::WrapperOptions options;
  options.context_file = file;
  options.prompt = "Fix the build.";
  options.cwd = "/";
  for (const char* tmpl : {"single-shot", "openspace", "plain"}) {
    options.template_name = tmpl;
    int code = worker::pack_command(options, config(), fuzz::scratch_dir() + "/no-state");
    if (code != worker::run_exit::kDone && code != worker::run_exit::kUsage) {
      fuzz::fail("pack exited " + std::to_string(code));
    }
  }

  auto context = schema::parse_json(input);
  if (!context) return 0;
  json params = {{"sessionId", "s"},
                 {"prompt", json::array({{{"type", "text"}, {"text", "Fix the build."}},
                                         {{"type", "resource_link"}, {"uri", "file:///src/a.cpp"}, {"name", "a.cpp"}}})}};
  params["_meta"]["harnessd"]["context"] = *context;
  auto prompt = schema::decode_prompt(params, schema::PromptCapabilities{true, false, true});
  if (!prompt) return 0;
  for (const std::string& name : harnesses::builtin_template_names()) {
    auto tmpl = harnesses::load_template(name, "");
    if (!tmpl) fuzz::fail("built-in template " + name + " does not load");
    harnesses::PackageInput in;
    in.blocks = prompt->prompt;
    in.context = prompt->harnessd.context;
    in.history = json::array({{{"task", "before"}, {"answer", "done"}}});
    in.workspace = "/src";
    in.harness = "fake";
    in.session = "s";
    harnesses::Packaged packaged = harnesses::package_prompt(*tmpl, in);
    if (packaged.text.empty()) fuzz::fail("template " + name + " packaged an empty prompt");
  }
  return 0;
}
