// What the nested tests need from the L1 guest the nested harness boots (run-nested.sh,
// docs/nested.md): the environment naming the devices bound to vfio-pci, and a skip when not
// inside it.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace potemkin::nested {

// Inside the harness's L1 guest (POTEMKIN_NESTED=1).
inline bool inside_l1() {
    const char* v = std::getenv("POTEMKIN_NESTED");
    return v != nullptr && std::string(v) == "1";
}

// The value of `var` ("" when unset).
inline std::string env(const char* var) {
    const char* v = std::getenv(var);
    return v != nullptr ? std::string(v) : std::string();
}

}  // namespace potemkin::nested

// Skips the test outside L1, or when the device variable `var` is unset there.
#define POTEMKIN_NESTED_DEVICE_OR_SKIP(var, out)                                               \
    if (!::potemkin::nested::inside_l1())                                                      \
        GTEST_SKIP() << "not inside the nested harness's L1 guest (POTEMKIN_NESTED is not 1; " \
                        "tests/nested/run-nested.sh runs these)";                              \
    const std::string out = ::potemkin::nested::env(var);                                      \
    if (out.empty()) GTEST_SKIP() << var << " is not set"
