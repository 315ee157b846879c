// The command line of the harnessd executable.
#pragma once

namespace harnessd::worker {

/// The whole program: parses argv and runs the chosen command. Returns the
/// process exit code (2 for usage and configuration errors).
int main(int argc, char** argv);

}  // namespace harnessd::worker
