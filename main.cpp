// The harnessd executable: everything lives in the libraries so that tests
// can run the whole daemon in-process.
#include "worker/cli.h"

int main(int argc, char** argv) { return harnessd::worker::main(argc, argv); }
