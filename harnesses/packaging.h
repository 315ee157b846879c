// Packaging: turns a prompt (its text, resources and images), the host's
// context (_meta.harnessd.context) and the session's history into one
// prompt through a template. Large embedded resources and images become
// files in the run folder, listed by path instead of inlined.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harnesses/template.h"

namespace harnessd::harnesses {

struct PackageInput {
  nlohmann::json blocks = nlohmann::json::array();  // the prompt's ContentBlocks
  nlohmann::json context;                           // _meta.harnessd.context (checked), or null
  nlohmann::json history = nlohmann::json::array();  // [{task, answer}], oldest first
  std::string summary;                               // set by the host for the session
  std::string workspace;                             // the session's cwd
  std::string harness;
  std::string session;  // name, else id
  /// Absolute run folder for files; empty: nothing is written (harnessd pack).
  std::string run_dir;
};

struct PackagedFile {
  std::string rel;  // relative to the run folder
  std::string bytes;
};

struct Packaged {
  std::string text;
  std::vector<PackagedFile> files;
  nlohmann::json data;  // what the template saw, for inspection
};

/// Embedded resources longer than this many bytes go to a file.
inline constexpr std::size_t kInlineResourceChars = 4000;

Packaged package_prompt(const Template& tmpl, const PackageInput& input);

/// The task of a prompt: its text blocks, in order, separated by blank lines.
std::string prompt_task(const nlohmann::json& blocks);

}  // namespace harnessd::harnesses
