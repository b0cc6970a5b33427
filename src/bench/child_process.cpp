#include "bench/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

extern char** environ;

namespace el::bench {
namespace {

std::atomic<bool> g_interrupt{false};

extern "C" void on_interrupt(int) { g_interrupt.store(true); }

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Keeps the last `limit` bytes of what is appended.
void append_tail(std::string& tail, const char* data, size_t n, size_t limit) {
  tail.append(data, n);
  if (tail.size() > limit) tail.erase(0, tail.size() - limit);
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool interrupt_requested() { return g_interrupt.load(); }
void clear_interrupt() { g_interrupt.store(false); }

std::string ChildResult::describe() const {
  if (interrupted) return "interrupted";
  if (timed_out) return fmt::format("timed out after {:.3g} s", wall_s);
  if (signal != 0) {
    const char* name = strsignal(signal);
    return fmt::format("killed by signal {} ({}{})", signal, name ? name : "?",
                       signal == SIGKILL ? "; the kernel's out-of-memory killer sends it" : "");
  }
  return fmt::format("exit code {}", exit_code);
}

Result<ChildResult> run_child(const ChildOptions& o) {
  if (o.argv.empty()) return make_error("no program given", "run_child");
  const std::string& program = o.argv.front();
  if (::access(program.c_str(), X_OK) != 0) {
    return make_error(fmt::format("cannot run '{}': {}", program, std::strerror(errno)),
                      "run_child");
  }
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return make_error(fmt::format("pipe failed: {}", std::strerror(errno)), "run_child");
  }
  // Non-blocking read end: a grandchild still holding the pipe must not hang
  // the final drain.
  ::fcntl(err_pipe[0], F_SETFL, ::fcntl(err_pipe[0], F_GETFL) | O_NONBLOCK);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  if (!o.stdout_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, o.stdout_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own process group: a terminal Ctrl-C reaches the parent only. Default
  // signal dispositions in the child (the parent may be ignoring some).
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : o.argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const auto t0 = clock_type::now();
  const int rc = posix_spawn(&pid, program.c_str(), &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(err_pipe[0]);
    return make_error(fmt::format("cannot start '{}': {}", program, std::strerror(rc)),
                      "run_child");
  }

  ChildResult r;
  bool pipe_open = true;
  bool term_sent = false;
  double term_at = 0;
  int status = 0;
  bool reaped = false;
  char buf[4096];
  while (!reaped) {
    if (pipe_open) {
      pollfd p{err_pipe[0], POLLIN, 0};
      const int n = ::poll(&p, 1, 50);
      if (n > 0) {
        const ssize_t got = ::read(err_pipe[0], buf, sizeof buf);
        if (got > 0) {
          append_tail(r.stderr_tail, buf, static_cast<size_t>(got), o.stderr_tail_bytes);
          if (o.echo_stderr) (void)!::write(STDERR_FILENO, buf, static_cast<size_t>(got));
          if (o.on_stderr) o.on_stderr(buf, static_cast<size_t>(got));
        } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
          pipe_open = false;  // the child closed its stderr (usually: exited)
        }
      }
    } else {
      ::usleep(20000);
    }
    if (o.on_tick) o.on_tick();
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      reaped = true;
      break;
    }
    const double elapsed = seconds_since(t0);
    if (!term_sent) {
      if (o.timeout_s > 0 && elapsed > o.timeout_s) r.timed_out = true;
      if (interrupt_requested()) r.interrupted = true;
      if (r.timed_out || r.interrupted) {
        ::kill(-pid, SIGTERM);  // the whole group: the child and anything it started
        term_sent = true;
        term_at = elapsed;
      }
    } else if (elapsed - term_at > o.kill_grace_s) {
      ::kill(-pid, SIGKILL);
    }
  }
  // Drain what is left in the pipe (the child may have exited mid-write).
  while (pipe_open) {
    const ssize_t got = ::read(err_pipe[0], buf, sizeof buf);
    if (got <= 0) break;
    append_tail(r.stderr_tail, buf, static_cast<size_t>(got), o.stderr_tail_bytes);
    if (o.echo_stderr) (void)!::write(STDERR_FILENO, buf, static_cast<size_t>(got));
    if (o.on_stderr) o.on_stderr(buf, static_cast<size_t>(got));
  }
  ::close(err_pipe[0]);
  r.wall_s = seconds_since(t0);
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
  }
  return r;
}

}  // namespace el::bench
