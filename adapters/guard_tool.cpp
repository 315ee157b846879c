// harnessd-guard: the guard as its own small, statically linked program,
// so that starting it costs little more than a fork and an exec.
#include "adapters/guard.h"

int main(int argc, char** argv) { harnessd::adapters::guard_main(argc, argv); }
