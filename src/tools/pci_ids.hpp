// Names from the system's PCI ID database (Debian's pci.ids package:
// /usr/share/misc/pci.ids), for `potemkin probe`. Missing file or entry: empty names.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace potemkin::tools {

class PciIds {
  public:
    // Loads the first database found in the usual places; an empty database if none.
    static PciIds load_system();
    static PciIds parse(const std::string& text);

    std::string vendor(uint16_t vendor) const;
    std::string device(uint16_t vendor, uint16_t device) const;
    // "Unclassified device" / "Ethernet controller" from base class and subclass.
    std::string class_name(uint8_t base, uint8_t sub) const;
    bool empty() const { return vendors_.empty() && classes_.empty(); }
    const std::string& source() const { return source_; }

  private:
    std::map<uint16_t, std::string> vendors_;
    std::map<uint32_t, std::string> devices_;  // vendor << 16 | device
    std::map<uint16_t, std::string> classes_;  // base << 8 | 0xff for the base name, | sub
    std::string source_;
};

}  // namespace potemkin::tools
