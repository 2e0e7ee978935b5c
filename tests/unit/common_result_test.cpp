// Errors as values (common/result.hpp) and the eventfd helpers (common/eventfd.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "common/eventfd.hpp"
#include "common/result.hpp"

namespace potemkin {
namespace {

Result<int> parse_digit(char c) {
    if (c < '0' || c > '9') return failf("'{}' is not a digit", c);
    return c - '0';
}

Result<int> sum_of_digits(char a, char b) {
    POTEMKIN_TRY_ASSIGN(const int x, parse_digit(a));
    int y = 0;
    POTEMKIN_TRY_ASSIGN(y, parse_digit(b));
    return x + y;
}

TEST(Result, TryAssignBindsTheValueOrPropagatesTheError) {
    auto good = sum_of_digits('3', '4');
    ASSERT_TRUE(good) << good.error().message;
    EXPECT_EQ(*good, 7);
    auto bad = sum_of_digits('3', 'x');
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "'x' is not a digit");
}

TEST(Result, FailfWithErrnoNamesTheCallAndCarriesTheErrno) {
    Result<void> r = failf(Errno{ENOENT}, "open {}", "/nonexistent");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "open /nonexistent: No such file or directory");
    EXPECT_EQ(r.error().sys_errno, ENOENT);
}

TEST(Eventfd, SignalThenConsumeOnceAndAQuietOneDoesNotBlock) {
    auto fd = make_eventfd();
    ASSERT_TRUE(fd) << fd.error().message;
    EXPECT_FALSE(consume_eventfd(fd->get()));
    ASSERT_TRUE(signal_eventfd(fd->get()));
    ASSERT_TRUE(signal_eventfd(fd->get()));
    EXPECT_TRUE(consume_eventfd(fd->get()));
    EXPECT_FALSE(consume_eventfd(fd->get()));
}

TEST(Eventfd, SignalOnAClosedFdIsAnErrorNamingTheFd) {
    int raw = -1;
    {
        auto fd = make_eventfd();
        ASSERT_TRUE(fd);
        raw = fd->get();
    }
    auto r = signal_eventfd(raw);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, EBADF);
    EXPECT_NE(r.error().message.find(std::to_string(raw)), std::string::npos);
}

}  // namespace
}  // namespace potemkin
