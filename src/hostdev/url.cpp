// Parsing hostdev URLs: "scheme:path[?k=v&k=v]". Deliberately strict (no percent-decoding,
// no flag-only parameters, no duplicates): a URL comes from a config file a human wrote, and
// a typo that silently changes meaning is worse than an error that names it.
#include <algorithm>
#include <cctype>

#include "hostdev/host_device.hpp"

namespace potemkin::hostdev {

namespace {

// RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
bool valid_scheme(std::string_view s) {
    if (s.empty() || std::isalpha(static_cast<unsigned char>(s[0])) == 0) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '-' || c == '.';
    });
}

}  // namespace

const std::string* ParsedUrl::param(std::string_view key) const {
    for (const auto& [k, v] : params) {
        if (k == key) return &v;
    }
    return nullptr;
}

Result<ParsedUrl> parse_url(std::string_view url) {
    const auto colon = url.find(':');
    if (colon == std::string_view::npos || colon == 0) {
        return failf("hostdev URL '{}' has no scheme (expected e.g. inproc:edu)", url);
    }
    ParsedUrl out;
    out.text = std::string(url);
    out.scheme = std::string(url.substr(0, colon));
    if (!valid_scheme(out.scheme)) {
        return failf(
            "hostdev URL '{}': scheme '{}' is not a letter followed by letters, digits, '+', "
            "'-' or '.'",
            url, out.scheme);
    }
    const std::string_view rest = url.substr(colon + 1);
    const auto question = rest.find('?');
    out.path = std::string(rest.substr(0, question));
    if (out.path.empty()) return failf("hostdev URL '{}' has an empty path", url);
    if (question == std::string_view::npos) return out;

    std::string_view query = rest.substr(question + 1);
    if (query.empty()) return failf("hostdev URL '{}' has an empty parameter list after '?'", url);
    while (true) {
        const auto amp = query.find('&');
        const std::string_view item = query.substr(0, amp);
        const auto eq = item.find('=');
        if (item.empty()) {
            return failf("hostdev URL '{}' has an empty parameter (stray '&')", url);
        }
        if (eq == std::string_view::npos || eq == 0) {
            return failf("hostdev URL '{}': parameter '{}' is not of the form key=value", url,
                         item);
        }
        std::string key(item.substr(0, eq));
        if (out.param(key) != nullptr) {
            return failf("hostdev URL '{}': parameter '{}' is given twice", url, key);
        }
        out.params.emplace_back(std::move(key), std::string(item.substr(eq + 1)));
        if (amp == std::string_view::npos) break;
        query = query.substr(amp + 1);
    }
    return out;
}

}  // namespace potemkin::hostdev
