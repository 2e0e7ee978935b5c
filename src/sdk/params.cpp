#include "sdk/params.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

namespace potemkin::sdk {

Result<void> check_params(const ModelParams& params,
                          std::initializer_list<std::string_view> known) {
    for (const auto& [key, unused] : params) {
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            return failf("unknown parameter '{}' (known: {})", key,
                         known.size() == 0 ? std::string("none")
                                           : fmt::format("{}", fmt::join(known, ", ")));
        }
    }
    return ok();
}

Result<uint64_t> param_u64(const ModelParams& params, std::string_view key, uint64_t fallback) {
    const auto it = params.find(std::string(key));
    if (it == params.end()) return fallback;
    std::string_view text = it->second;
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    } else if (text.size() > 2 && text[0] == '0' && (text[1] == 'b' || text[1] == 'B')) {
        base = 2;
        text.remove_prefix(2);
    }
    uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
        return failf("parameter {}='{}' is not an unsigned 64-bit number", key, it->second);
    }
    return value;
}

Result<bool> param_bool(const ModelParams& params, std::string_view key, bool fallback) {
    const auto it = params.find(std::string(key));
    if (it == params.end()) return fallback;
    const std::string& v = it->second;
    if (v == "1" || v == "true" || v == "on" || v == "yes") return true;
    if (v == "0" || v == "false" || v == "off" || v == "no") return false;
    return failf("parameter {}='{}' is not a boolean (1/0, true/false, on/off, yes/no)", key, v);
}

}  // namespace potemkin::sdk
