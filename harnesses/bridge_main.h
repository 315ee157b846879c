// `harnessd adapter <bridge> [options] [-- command...]`: a built-in bridge
// as a standalone ACP agent on stdio.
#pragma once

namespace harnessd::harnesses {

/// argv[0] is "adapter". Returns the process exit code.
int bridge_main(int argc, char** argv);

}  // namespace harnessd::harnesses
