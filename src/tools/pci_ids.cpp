#include "tools/pci_ids.hpp"

#include <fstream>
#include <sstream>

namespace potemkin::tools {
namespace {

bool hex(const std::string& s, size_t pos, size_t digits, uint32_t& out) {
    if (s.size() < pos + digits) return false;
    out = 0;
    for (size_t i = pos; i < pos + digits; ++i) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        out = out << 4 | static_cast<uint32_t>(v);
    }
    return true;
}

std::string name_after(const std::string& line, size_t pos) {
    size_t start = line.find_first_not_of(' ', pos);
    return start == std::string::npos ? std::string() : line.substr(start);
}

}  // namespace

PciIds PciIds::load_system() {
    for (const char* path :
         {"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"}) {
        std::ifstream in(path);
        if (!in) continue;
        std::stringstream ss;
        ss << in.rdbuf();
        PciIds ids = parse(ss.str());
        ids.source_ = path;
        return ids;
    }
    return {};
}

// Format (pci.ids header): "vvvv  name", "\tdddd  name", "\t\tssss ssss  name";
// after "C cc  name": "\tss  name" subclasses and "\t\tpp  name" programming interfaces.
PciIds PciIds::parse(const std::string& text) {
    PciIds ids;
    std::istringstream in(text);
    std::string line;
    uint32_t vendor = 0, cls = 0;
    bool in_classes = false, have_vendor = false;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        uint32_t v = 0;
        if (line.rfind("C ", 0) == 0 && hex(line, 2, 2, v)) {
            in_classes = true;
            cls = v;
            ids.classes_[static_cast<uint16_t>(cls << 8 | 0xff)] = name_after(line, 4);
            continue;
        }
        if (line[0] != '\t') {
            in_classes = false;
            have_vendor = hex(line, 0, 4, v);
            if (have_vendor) {
                vendor = v;
                ids.vendors_[static_cast<uint16_t>(v)] = name_after(line, 4);
            }
            continue;
        }
        if (line.size() > 1 && line[1] == '\t') continue;  // subsystems, prog-ifs
        if (in_classes && hex(line, 1, 2, v)) {
            ids.classes_[static_cast<uint16_t>(cls << 8 | v)] = name_after(line, 3);
        } else if (have_vendor && hex(line, 1, 4, v)) {
            ids.devices_[vendor << 16 | v] = name_after(line, 5);
        }
    }
    return ids;
}

std::string PciIds::vendor(uint16_t v) const {
    auto it = vendors_.find(v);
    return it == vendors_.end() ? std::string() : it->second;
}

std::string PciIds::device(uint16_t v, uint16_t d) const {
    auto it = devices_.find(uint32_t{v} << 16 | d);
    return it == devices_.end() ? std::string() : it->second;
}

std::string PciIds::class_name(uint8_t base, uint8_t sub) const {
    if (auto it = classes_.find(static_cast<uint16_t>(base << 8 | sub)); it != classes_.end())
        return it->second;
    if (auto it = classes_.find(static_cast<uint16_t>(base << 8 | 0xff)); it != classes_.end())
        return it->second;
    return {};
}

}  // namespace potemkin::tools
