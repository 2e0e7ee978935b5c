#include "pci/config_write.hpp"

#include <algorithm>

namespace potemkin::pci {

namespace {

void add_range(DecodeSnapshot& snap, const BarInfo& b) {
    if (b.kind == BarKind::io)
        snap.io.push_back(
            {static_cast<uint16_t>(b.address), static_cast<uint32_t>(b.size), b.index});
    else
        snap.mmio.push_back({b.address, b.size, b.index});
}

template <typename R>
std::vector<R> minus(const std::vector<R>& a, const std::vector<R>& b) {
    std::vector<R> out;
    for (const auto& r : a)
        if (std::find(b.begin(), b.end(), r) == b.end()) out.push_back(r);
    return out;
}

}  // namespace

DecodeSnapshot decode_all(const ConfigSpace& cs, const BarLayout& layout) {
    DecodeSnapshot snap;
    for (int i = 0; i < kBarCount; ++i) {
        if (!layout.bars[static_cast<size_t>(i)]) continue;
        if (auto b = decode_bar(cs, i)) add_range(snap, *b);
    }
    if (layout.rom)
        if (auto b = decode_bar(cs, kRomBarIndex)) add_range(snap, *b);
    return snap;
}

BusChanges diff_decode(const DecodeSnapshot& before, const DecodeSnapshot& after) {
    BusChanges c;
    c.io_remove = minus(before.io, after.io);
    c.io_add = minus(after.io, before.io);
    c.mmio_remove = minus(before.mmio, after.mmio);
    c.mmio_add = minus(after.mmio, before.mmio);
    return c;
}

ConfigWriteResult write_config(ConfigSpace& cs, const BarLayout& layout, uint32_t offset,
                               unsigned size, uint32_t value) {
    const DecodeSnapshot before = decode_all(cs, layout);
    cs.write(offset, size, value);
    return {diff_decode(before, decode_all(cs, layout))};
}

}  // namespace potemkin::pci
