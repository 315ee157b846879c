// Golden tests of the built-in templates and of the template language:
// empty sections vanish, lists render, budgets cut in the documented order
// with markers, and the same inputs give the same bytes. Set
// HARNESSD_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate
// change, then review the diff.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "harnesses/packaging.h"
#include "harnesses/template.h"

using namespace harnessd::harnesses;
using nlohmann::json;

namespace {

std::string golden_path(const std::string& name) { return std::string(TESTS_DIR) + "/harnesses/golden/" + name; }

void check_golden(const std::string& name, const std::string& actual) {
  if (std::getenv("HARNESSD_UPDATE_GOLDEN")) {
    std::ofstream(golden_path(name), std::ios::binary) << actual;
  }
  std::ifstream in(golden_path(name), std::ios::binary);
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  INFO("golden file " << name);
  CHECK(actual == ss.str());
}

Template builtin(const std::string& name) {
  auto t = load_template(name, "");
  REQUIRE(t);
  return *t;
}

json text(const std::string& t) { return {{"type", "text"}, {"text", t}}; }

PackageInput full_input() {
  PackageInput in;
  in.blocks = json::array({text("Add a --verbose flag to the CLI."),
                           {{"type", "resource_link"}, {"uri", "file:///repo/src/cli.cpp"}, {"name", "cli.cpp"}},
                           {{"type", "resource"},
                            {"resource", {{"uri", "file:///repo/NOTES.md"}, {"text", "Flags are parsed with CLI11."}}}}});
  in.context = {{"background", "The project is a C++ daemon; the user prefers small commits."},
                {"constraints", {"Do not touch tests/", "No new dependencies"}},
                {"acceptance", {"--verbose prints debug logs", "make test passes"}},
                {"references", {"/repo/docs/cli.md", {{"path", "/repo/README.md"}, {"title", "readme"}}}},
                {"outputContract", "End with the list of files you changed."}};
  in.history = json::array({{{"task", "Explain the CLI"}, {"answer", "It uses CLI11 with subcommands."}},
                            {{"task", "Where are logs?"}, {"answer", "On stderr, see acp/log.h."}}});
  in.summary = "Working on the CLI.";
  in.workspace = "/repo";
  in.harness = "claude-code";
  in.session = "agent:cli";
  return in;
}

}  // namespace

TEST_CASE("single-shot with every section") {
  check_golden("single-shot-full.txt", package_prompt(builtin("single-shot"), full_input()).text);
}

TEST_CASE("single-shot with only a task: empty sections vanish") {
  PackageInput in;
  in.blocks = json::array({text("Say hello.")});
  in.workspace = "/w";
  check_golden("single-shot-minimal.txt", package_prompt(builtin("single-shot"), in).text);
}

TEST_CASE("openspace puts the reference files first, then the task") {
  check_golden("openspace-full.txt", package_prompt(builtin("openspace"), full_input()).text);
}

TEST_CASE("plain is the task and a list of references") {
  check_golden("plain-full.txt", package_prompt(builtin("plain"), full_input()).text);
}

TEST_CASE("every context field reaches the prompt of the templates that promise it") {
  // single-shot and openspace carry the whole context and the session's
  // memory; plain is documented as the task and its references only.
  const PackageInput in = full_input();
  for (const char* name : {"single-shot", "openspace"}) {
    std::string out = package_prompt(builtin(name), in).text;
    INFO(name << ":\n" << out);
    CHECK(out.find(in.context["background"].get<std::string>()) != std::string::npos);
    for (const auto& c : in.context["constraints"]) CHECK(out.find(c.get<std::string>()) != std::string::npos);
    for (const auto& a : in.context["acceptance"]) CHECK(out.find(a.get<std::string>()) != std::string::npos);
    CHECK(out.find("/repo/docs/cli.md") != std::string::npos);
    CHECK(out.find("/repo/README.md (readme)") != std::string::npos);
    CHECK(out.find(in.context["outputContract"].get<std::string>()) != std::string::npos);
    CHECK(out.find(in.summary) != std::string::npos);
    for (const auto& h : in.history) CHECK(out.find(h["answer"].get<std::string>()) != std::string::npos);
    CHECK(out.find("Add a --verbose flag to the CLI.") != std::string::npos);
  }
  std::string plain = package_prompt(builtin("plain"), in).text;
  CHECK(plain.find("Add a --verbose flag to the CLI.") != std::string::npos);
  CHECK(plain.find("/repo/README.md (readme)") != std::string::npos);
}

TEST_CASE("rendering is deterministic") {
  auto t = builtin("single-shot");
  CHECK(package_prompt(t, full_input()).text == package_prompt(t, full_input()).text);
}

TEST_CASE("budgets cut the oldest history first, then the largest references, each cut marked") {
  const std::string body = R"({{#section task}}
TASK: {{task}}
{{/section}}
{{#section refs}}
REFS:
{{#each references}}
* {{path}}: {{content}}
{{/each}}
{{/section}}
{{#section history budget=310}}
HISTORY:
{{#each history}}
- {{task}} -> {{answer}}
{{/each}}
{{/section}}
)";
  json data = {{"task", "do it"},
               {"references", {{{"path", "/a"}, {"content", std::string(150, 'a')}},
                               {{"path", "/b"}, {"content", std::string(250, 'b')}}}},
               {"history", {{{"task", "first"}, {"answer", std::string(100, '1')}},
                            {{"task", "second"}, {"answer", std::string(100, '2')}},
                            {{"task", "third"}, {"answer", std::string(100, '3')}}}}};
  // A section's budget trims the lists inside it: the oldest turn goes.
  auto sectioned = Template::parse(body, "section-budget");
  REQUIRE(sectioned);
  std::string out = sectioned->render(data);
  check_golden("budget-section.txt", out);
  CHECK(out.find("first") == std::string::npos);
  CHECK(out.find("second") != std::string::npos);
  CHECK(out.find("third") != std::string::npos);
  CHECK(out.find("[... 1 earlier turns left out to fit the budget") != std::string::npos);
  CHECK(out.find(std::string(250, 'b')) != std::string::npos);  // references untouched

  // The whole template's budget: every history turn goes before any
  // reference is touched, then the largest reference's content.
  auto whole = Template::parse("{{budget 430}}" + body, "template-budget");
  REQUIRE(whole);
  out = whole->render(data);
  check_golden("budget-template.txt", out);
  CHECK(out.find("third") == std::string::npos);
  CHECK(out.find("[... 3 earlier turns left out") != std::string::npos);
  CHECK(out.find("read it from /b") != std::string::npos);
  CHECK(out.find(std::string(150, 'a')) != std::string::npos);  // the smaller one stays
}

TEST_CASE("a budget that trimming cannot meet ends in a marked hard cut") {
  auto t = Template::parse("{{budget 100}}{{task}}", "cut");
  REQUIRE(t);
  std::string out = t->render({{"task", std::string(500, 'x')}});
  CHECK(out.find("characters cut to fit a budget of 100") != std::string::npos);
  std::size_t chars = 0;
  for (unsigned char c : out) chars += (c & 0xc0) != 0x80;
  CHECK(chars <= 100);
}

TEST_CASE("the trimming's own marks in the input are dropped, whatever their type") {
  // A host's context may carry any key; `_cut` on a reference and
  // `_trimmed` are the trimming's, and one of another type used to throw.
  auto t = Template::parse("{{budget 120}}{{#each references}}{{content}}\n{{/each}}", "marks");
  REQUIRE(t);
  json input = {{"_trimmed", "not an object"},
                {"references", {{{"uri", "/a"}, {"_cut", "/a"}, {"content", std::string(300, 'x')}}}}};
  std::string out;
  REQUIRE_NOTHROW(out = t->render(input));
  // Cut as any reference would be: the input's `_cut` did not stop it.
  CHECK(out.find("content left out to fit the budget (300 characters); read it from /a") != std::string::npos);
  CHECK(out.find(std::string(300, 'x')) == std::string::npos);
}

TEST_CASE("budgets count characters, not bytes, and never split one") {
  auto t = Template::parse("{{budget 60}}{{task}}", "utf8");
  REQUIRE(t);
  std::string out = t->render({{"task", std::string(40, 'a') + "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"}});
  CHECK(out == std::string(40, 'a') + "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");  // 45 characters fit
}

TEST_CASE("template syntax errors name the line") {
  CHECK(Template::parse("a\n{{#section x}}\nb\n", "t").error().message == "t: '#x' is never closed");
  CHECK(Template::parse("{{#each a}}{{/section}}", "t").error().message == "t:1: '/section' closes '#each'");
  CHECK(Template::parse("x\n{{#loop a}}", "t").error().message == "t:2: unknown block '#loop'");
  CHECK(Template::parse("{{/if}}", "t").error().message == "t:1: '/if' closes nothing");
  CHECK_FALSE(load_template("../etc/passwd", ""));
  CHECK(load_template("nope", "").error().message.find("built-in: openspace, plain, single-shot") != std::string::npos);
}

TEST_CASE("large embedded resources and images become files in the run folder") {
  PackageInput in;
  in.blocks = json::array({text("Look at these."),
                           {{"type", "resource"},
                            {"resource", {{"uri", "file:///x/big.log"}, {"text", std::string(kInlineResourceChars + 1, 'z')}}}},
                           {{"type", "image"}, {"mimeType", "image/png"}, {"data", "aGVsbG8="}}});
  in.workspace = "/w";
  in.run_dir = "/state/runs/run_1";
  Packaged p = package_prompt(builtin("single-shot"), in);
  REQUIRE(p.files.size() == 2);
  CHECK(p.files[0].rel == "references/1-big.log");
  CHECK(p.files[0].bytes.size() == kInlineResourceChars + 1);
  CHECK(p.files[1].rel == "images/2.png");
  CHECK(p.files[1].bytes == "hello");
  CHECK(p.text.find("/state/runs/run_1/references/1-big.log") != std::string::npos);
  CHECK(p.text.find("/state/runs/run_1/images/2.png (image, image/png)") != std::string::npos);
  CHECK(p.text.find("zzzz") == std::string::npos);  // listed, not inlined
}

TEST_CASE("context fields given as null count as absent") {
  PackageInput in;
  in.blocks = json::array({text("Do the thing.")});
  in.context = {{"background", nullptr}, {"constraints", nullptr}, {"outputContract", nullptr}, {"vars", nullptr}};
  Packaged with_nulls = package_prompt(builtin("single-shot"), in);
  in.context = nullptr;
  CHECK(with_nulls.text == package_prompt(builtin("single-shot"), in).text);
}
