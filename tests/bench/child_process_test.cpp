// child_process_test.cpp — run_child: exit codes, signals, timeouts, the
// stderr tail, stdout to a file, interrupts, and programs that cannot start.
#include "bench/child_process.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <string>

namespace el::bench {
namespace {

ChildOptions sh(const std::string& script) {
  ChildOptions o;
  o.argv = {"/bin/sh", "-c", script};
  return o;
}

TEST(ChildProcess, ExitCodeAndStderrTail) {
  ChildOptions o = sh("echo starting >&2; i=0; while [ $i -lt 200 ]; do echo line$i >&2; "
                      "i=$((i+1)); done; exit 3");
  o.stderr_tail_bytes = 64;
  auto r = run_child(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->describe(), "exit code 3");
  EXPECT_LE(r->stderr_tail.size(), 64u);
  EXPECT_NE(r->stderr_tail.find("line199"), std::string::npos) << r->stderr_tail;
  EXPECT_EQ(r->stderr_tail.find("starting"), std::string::npos);  // only the tail is kept
}

TEST(ChildProcess, SuccessAndStdoutToFile) {
  char tmpl[] = "/tmp/el_child_XXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  ChildOptions o = sh("echo '{\"ok\": true}'");
  o.stdout_path = tmpl;
  auto r = run_child(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->ok());
  std::ifstream in(tmpl);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "{\"ok\": true}\n");
  unlink(tmpl);
}

TEST(ChildProcess, KilledBySignalIsNamed) {
  auto r = run_child(sh("echo dying >&2; kill -9 $$"));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_NE(r->describe().find("signal 9"), std::string::npos) << r->describe();
  EXPECT_NE(r->describe().find("out-of-memory"), std::string::npos);
  EXPECT_NE(r->stderr_tail.find("dying"), std::string::npos);
}

TEST(ChildProcess, TimeoutStopsTheChild) {
  ChildOptions o = sh("sleep 30");
  o.timeout_s = 0.3;
  o.kill_grace_s = 0.5;
  auto r = run_child(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->timed_out);
  EXPECT_LT(r->wall_s, 10.0);
  EXPECT_NE(r->describe().find("timed out"), std::string::npos);
}

TEST(ChildProcess, TimeoutEscalatesToSigkill) {
  ChildOptions o = sh("trap '' TERM; sleep 30");
  o.timeout_s = 0.2;
  o.kill_grace_s = 0.3;
  auto r = run_child(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->timed_out);
  EXPECT_LT(r->wall_s, 10.0);
}

TEST(ChildProcess, InterruptStopsTheChild) {
  clear_interrupt();
  install_interrupt_handler();
  ChildOptions o = sh("sleep 30");
  o.kill_grace_s = 0.5;
  std::raise(SIGINT);  // as a Ctrl-C would, before the child even starts
  auto r = run_child(o);
  clear_interrupt();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->interrupted);
  EXPECT_EQ(r->describe(), "interrupted");
  EXPECT_LT(r->wall_s, 10.0);
}

TEST(ChildProcess, ProgramThatCannotStartIsAnError) {
  ChildOptions o;
  o.argv = {"/nonexistent/efficientllm"};
  auto r = run_child(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("/nonexistent/efficientllm"), std::string::npos);
  EXPECT_FALSE(run_child(ChildOptions{}).ok());
}

}  // namespace
}  // namespace el::bench
