#include <gtest/gtest.h>
TEST(GuestPlaceholder, Builds) { EXPECT_EQ(1 + 1, 2); }
