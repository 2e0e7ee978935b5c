// Errors as values: a small std::expected stand-in (C++23's <expected> is not in C++20).
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace potemkin {

// An error says what went wrong and names the offending thing. `sys_errno` carries an
// errno when the error came from the OS or a peer that reported one (0 otherwise).
struct Error {
    std::string message;
    int sys_errno = 0;

    // Prefix context ("edu0: " + message) while propagating.
    Error context(std::string_view prefix) const& {
        return Error{fmt::format("{}: {}", prefix, message), sys_errno};
    }
};

template <typename E>
struct Unexpected {
    E error;
};

inline Unexpected<Error> fail(std::string message, int sys_errno = 0) {
    return Unexpected<Error>{Error{std::move(message), sys_errno}};
}
template <typename... Args>
Unexpected<Error> failf(fmt::format_string<Args...> f, Args&&... args) {
    return Unexpected<Error>{Error{fmt::format(f, std::forward<Args>(args)...), 0}};
}

// An errno to carry in an error: failf(Errno{errno}, "open {}", path) gives
// "open PATH: No such file or directory" with sys_errno set.
struct Errno {
    int value = 0;
};
template <typename... Args>
Unexpected<Error> failf(Errno e, fmt::format_string<Args...> f, Args&&... args) {
    return Unexpected<Error>{Error{
        fmt::format("{}: {}", fmt::format(f, std::forward<Args>(args)...), std::strerror(e.value)),
        e.value}};
}
inline Unexpected<Error> fail(Error e) {
    return Unexpected<Error>{std::move(e)};
}

// Result<T>: either a T or an Error. [[nodiscard]] so an error is never dropped silently.
template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit
    Result(Unexpected<Error> e) : v_(std::in_place_index<1>, std::move(e.error)) {}  // NOLINT

    bool has_value() const { return v_.index() == 0; }
    explicit operator bool() const { return has_value(); }
    T& value() & {
        assert(has_value());
        return std::get<0>(v_);
    }
    const T& value() const& {
        assert(has_value());
        return std::get<0>(v_);
    }
    T&& value() && {
        assert(has_value());
        return std::get<0>(std::move(v_));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const Error& error() const {
        assert(!has_value());
        return std::get<1>(v_);
    }
    T value_or(T fallback) const { return has_value() ? std::get<0>(v_) : fallback; }

  private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
  public:
    Result() = default;
    Result(Unexpected<Error> e) : error_(std::move(e.error)), ok_(false) {}  // NOLINT
    bool has_value() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const {
        assert(!ok_);
        return error_;
    }

  private:
    Error error_;
    bool ok_ = true;
};

inline Result<void> ok() {
    return {};
}

}  // namespace potemkin

#define POTEMKIN_TRY_CAT_(a, b) a##b
#define POTEMKIN_TRY_NAME_(n) POTEMKIN_TRY_CAT_(potemkin_try_value_, n)
#define POTEMKIN_TRY_ASSIGN_(tmp, decl, expr)                  \
    auto tmp = (expr);                                         \
    if (!tmp) return ::potemkin::fail(std::move(tmp).error()); \
    decl = std::move(tmp).value()

// Propagate an error or bind the value: POTEMKIN_TRY_ASSIGN(auto fd, make_eventfd());
// (a declaration or an lvalue on the left; usable once per line).
#define POTEMKIN_TRY_ASSIGN(decl, expr) \
    POTEMKIN_TRY_ASSIGN_(POTEMKIN_TRY_NAME_(__LINE__), decl, expr)

// Propagate an error from an expression returning Result<...>: TRY(expr);
#define POTEMKIN_TRY(expr)                                                                \
    do {                                                                                  \
        auto&& potemkin_try_result_ = (expr);                                             \
        if (!potemkin_try_result_) return ::potemkin::fail(potemkin_try_result_.error()); \
    } while (0)
