// ISO 8601 times as the ledger and the records write them.
#include <catch2/catch.hpp>

#include <chrono>

#include "acp/files.h"

using namespace harnessd;
using namespace std::chrono;

TEST_CASE("iso_time writes UTC with milliseconds, and the seconds it keeps follow the clock") {
  const system_clock::time_point epoch{};
  CHECK(acp::iso_time(epoch) == "1970-01-01T00:00:00.000Z");
  CHECK(acp::iso_time(epoch + milliseconds(7)) == "1970-01-01T00:00:00.007Z");
  CHECK(acp::iso_time(epoch + milliseconds(1999)) == "1970-01-01T00:00:01.999Z");
  // 2026-12-03T04:05:06.042Z, then one second later and a day earlier:
  // each formats its own seconds, whatever came before.
  const auto t = epoch + seconds(1796270706) + milliseconds(42);
  CHECK(acp::iso_time(t) == "2026-12-03T04:05:06.042Z");
  CHECK(acp::iso_time(t + milliseconds(958)) == "2026-12-03T04:05:07.000Z");
  CHECK(acp::iso_time(t - hours(24)) == "2026-12-02T04:05:06.042Z");
  CHECK(acp::iso_time(t + milliseconds(100)) == "2026-12-03T04:05:06.142Z");
  CHECK(acp::iso_time(epoch - milliseconds(1)) == "1969-12-31T23:59:59.999Z");
}
