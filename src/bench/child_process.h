// child_process.h — run one benchmark experiment in its own process.
//
// Why a child process per experiment: the allocator's counters, the CUDA
// context and the heap start clean for every run (memory figures are not
// polluted by the previous experiment), and a crash, an out-of-memory kill or
// a hang becomes a failed row with its reason and the tail of its stderr
// while the suite goes on.
//
// run_child() starts argv[0] (a path, no PATH search) in its own process
// group, so a Ctrl-C at the terminal reaches only the parent, which then
// stops the child (SIGTERM, then SIGKILL after a grace period) and reports
// it as interrupted; the caller decides to stop the suite. The child's stderr
// is read through a pipe: the last `stderr_tail_bytes` are kept for the
// record and, with echo_stderr, everything is also copied to our stderr (the
// child's progress bar). stdout can go to a file (the child's JSON result).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace el::bench {

struct ChildOptions {
  std::vector<std::string> argv;  // argv[0]: the program's path
  double timeout_s = 0;           // wall-clock limit; 0 = none
  double kill_grace_s = 2;        // SIGTERM, then SIGKILL after this long
  std::string stdout_path;        // "" = inherit our stdout
  size_t stderr_tail_bytes = 4096;
  bool echo_stderr = false;
  // Called with each chunk read from the child's stderr (e.g. to follow its
  // progress lines), and about every 50 ms while it runs (e.g. to redraw a
  // progress bar). Both run on the calling thread; either may be empty.
  std::function<void(const char* data, size_t size)> on_stderr;
  std::function<void()> on_tick;
};

struct ChildResult {
  int exit_code = -1;  // when the child exited by itself
  int signal = 0;      // the signal that ended it, 0 if none
  bool timed_out = false;
  bool interrupted = false;  // stopped because interrupt_requested() became true
  double wall_s = 0;
  std::string stderr_tail;  // the last stderr_tail_bytes of its stderr
  bool ok() const { return !timed_out && !interrupted && signal == 0 && exit_code == 0; }
  // "exit code 3", "killed by signal 9 (SIGKILL: out of memory?)",
  // "timed out after 30 s", "interrupted".
  std::string describe() const;
};

// Starts and waits for the child. An Error only when it cannot be started
// (no such program, no permission, no pipe); every way the child itself can
// fail is in the result.
Result<ChildResult> run_child(const ChildOptions& options);

// SIGINT/SIGTERM set a flag instead of ending the process, so the suite can
// stop its current child, keep every finished record and exit cleanly.
void install_interrupt_handler();
bool interrupt_requested();
void clear_interrupt();  // tests

}  // namespace el::bench
