// fuzz_dispatch: whole lines from a host into the real Engine (agent,
// scheduler, store in a scratch state directory); every request must be
// answered exactly once and every line written must be JSON-RPC.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  using namespace harnessd::fuzz;
  std::string_view text(reinterpret_cast<const char*>(bytes), size);
  auto lines = split_lines(text);
  const std::string state = scratch_dir() + "/state";
  reset_dir(state);
  auto out = run_engine(lines, state);
  check_answers(lines, out);
  return 0;
}
