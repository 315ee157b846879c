// toml++ in its compiled mode (TOML_HEADER_ONLY=0 for every user): its
// implementation is built here, once, and linked into harnessd.
#define TOML_IMPLEMENTATION
#include <toml++/toml.h>
