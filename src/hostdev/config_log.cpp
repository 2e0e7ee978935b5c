#include "hostdev/config_log.hpp"

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

namespace potemkin::hostdev {

void ConfigLog::record(uint32_t offset, std::span<const uint8_t> bytes) {
    if (bytes.empty()) return;
    const uint64_t seq = ++seq_;
    for (size_t i = 0; i < bytes.size(); ++i)
        bytes_[offset + static_cast<uint32_t>(i)] = Byte{seq, bytes[i]};
}

Result<void> ConfigLog::replay(const Writer& write) const {
    // (seq, offset): the bytes of one write are consecutive, oldest write first.
    std::vector<std::tuple<uint64_t, uint32_t, uint8_t>> order;
    order.reserve(bytes_.size());
    for (const auto& [offset, b] : bytes_) order.emplace_back(b.seq, offset, b.value);
    std::sort(order.begin(), order.end());
    std::array<uint8_t, 4> run{};
    for (size_t i = 0; i < order.size();) {
        const auto [seq, start, first] = order[i];
        size_t n = 0;
        run[n++] = first;
        // Extend while the same write continues at the next offset within the dword.
        while (i + n < order.size() && n < run.size() && std::get<0>(order[i + n]) == seq &&
               std::get<1>(order[i + n]) == start + n && (start + n) % 4 != 0) {
            run[n] = std::get<2>(order[i + n]);
            ++n;
        }
        POTEMKIN_TRY(write(start, std::span<const uint8_t>(run.data(), n)));
        i += n;
    }
    return ok();
}

}  // namespace potemkin::hostdev
