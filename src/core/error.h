// error.h — the engine's error type and Result<T>.
//
// Library code never exits. Functions that can fail because of their input
// (files, configs, shapes requested by a user) return Result<T> or Status;
// the CLI decides what to do with the Error. An Error says what failed, where
// (file:line, YAML key, tensor name, ...) and, when we know one, a hint.
//
// Internal invariants that only a bug can break (an op handed tensors of
// mismatched shape by our own model code) use EL_ENSURE, which throws
// el::Exception carrying the same Error; the CLI catches it at the top.
#pragma once

#include <fmt/format.h>

#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace el {

struct Error {
  std::string what;   // what failed, e.g. "unknown key 'n_layr'"
  std::string where;  // where, e.g. "configs/models/tiny.yaml:3"
  std::string hint;   // how to fix it, may be empty

  // "where: what (hint: ...)" on one line.
  std::string message() const;
};

inline Error make_error(std::string what, std::string where = {}, std::string hint = {}) {
  return Error{std::move(what), std::move(where), std::move(hint)};
}

// Thrown only for broken invariants (see file comment) and caught by the CLI.
class Exception : public std::exception {
 public:
  explicit Exception(Error e) : error_(std::move(e)), text_(error_.message()) {}
  const char* what() const noexcept override { return text_.c_str(); }
  const Error& error() const { return error_; }

 private:
  Error error_;
  std::string text_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(implicit)
  Result(Error error) : v_(std::move(error)) {}    // NOLINT(implicit)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { ensure_ok(); return std::get<0>(v_); }
  const T& value() const& { ensure_ok(); return std::get<0>(v_); }
  T&& value() && { ensure_ok(); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  void ensure_ok() const {
    if (!ok()) throw Exception(std::get<1>(v_));
  }
  std::variant<T, Error> v_;
};

// Result<void>.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : e_(std::move(error)) {}  // NOLINT(implicit)
  static Status Ok() { return {}; }
  bool ok() const { return !e_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *e_; }
  // Throws el::Exception if not ok; for tests and top-level glue.
  void check() const {
    if (e_) throw Exception(*e_);
  }

 private:
  std::optional<Error> e_;
};

}  // namespace el

#define EL_CONCAT_INNER_(a, b) a##b
#define EL_CONCAT_(a, b) EL_CONCAT_INNER_(a, b)

// Propagate a failed Status/Result from the enclosing function.
#define EL_TRY(expr)                                  \
  do {                                                \
    auto&& el_try_status_ = (expr);                   \
    if (!el_try_status_.ok()) return el_try_status_.error(); \
  } while (0)

// EL_TRY_ASSIGN(auto x, f());  — declares/assigns x from a Result, or returns its error.
#define EL_TRY_ASSIGN(lhs, expr)                                          \
  auto EL_CONCAT_(el_try_r_, __LINE__) = (expr);                          \
  if (!EL_CONCAT_(el_try_r_, __LINE__).ok())                              \
    return EL_CONCAT_(el_try_r_, __LINE__).error();                       \
  lhs = std::move(EL_CONCAT_(el_try_r_, __LINE__)).value()

// Invariant check that throws el::Exception with file:line (bugs, not bad input).
#define EL_ENSURE(cond, ...)                                                         \
  do {                                                                               \
    if (!(cond))                                                                     \
      throw ::el::Exception(::el::make_error(fmt::format(__VA_ARGS__),               \
                                             fmt::format("{}:{}", __FILE__, __LINE__))); \
  } while (0)
