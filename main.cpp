// The harnessd executable: everything lives in the libraries so that tests
// can run the whole daemon in-process.
#include <malloc.h>

#include "worker/cli.h"

int main(int argc, char** argv) {
  // glibc gives the free memory at the top of a thread's heap back to the
  // kernel once it passes 128 KiB. The database writer's heap swings past
  // that with every batch, and each madvise(MADV_DONTNEED) that returns it
  // flushes the TLB on every CPU the process runs on: a tenth of harnessd's
  // CPU in a busy session. Up to 4 MiB stays in each heap instead; a block
  // of 1 MiB or more still has a mapping of its own, given back when freed.
  mallopt(M_TRIM_THRESHOLD, 4 << 20);
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  return harnessd::worker::main(argc, argv);
}
