// Palacios-style XML VM configuration (ARCHITECTURE.md §5, docs/config.md).
// Every error names the file, the line, the element and, where there is one, the attribute:
//   vm.xml:12: <device class="PCI_FRONT">: attribute 'bus' refers to unknown device 'pci9'
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pugixml.hpp>

#include "common/result.hpp"

namespace potemkin::vm {

class ConfigDocument;

// One element of the configuration, with enough context to report errors precisely.
class ConfigElement {
  public:
    ConfigElement(std::shared_ptr<const ConfigDocument> doc, pugi::xml_node node)
        : doc_(std::move(doc)), node_(node) {}

    std::string_view name() const { return node_.name(); }
    unsigned line() const;
    // "vm.xml:12: <device class="PCI_FRONT">"
    std::string where() const;
    Error error(std::string_view message) const;
    Error attr_error(std::string_view attr, std::string_view message) const;

    bool has(std::string_view attr) const;
    std::optional<std::string> attr(std::string_view attr) const;
    Result<std::string> required(std::string_view attr) const;
    // Decimal or 0x-prefixed hexadecimal, within [0, max].
    Result<uint64_t> number(std::string_view attr, std::optional<uint64_t> fallback = std::nullopt,
                            uint64_t max = ~0ull) const;
    Result<bool> boolean(std::string_view attr, bool fallback) const;

    std::optional<ConfigElement> child(std::string_view name) const;
    std::vector<ConfigElement> children(std::string_view name) const;
    std::vector<ConfigElement> children() const;
    std::string text() const;
    // The text of a required child element as a number ("<start>0x3f8</start>").
    Result<uint64_t> child_number(std::string_view name, uint64_t max = ~0ull) const;
    Result<std::string> child_text(std::string_view name) const;

    // Reject attributes other than `allowed` (typos must not be silently ignored).
    Result<void> only_attributes(std::initializer_list<std::string_view> allowed) const;

    const ConfigDocument& document() const { return *doc_; }

  private:
    std::shared_ptr<const ConfigDocument> doc_;
    pugi::xml_node node_;
};

class ConfigDocument : public std::enable_shared_from_this<ConfigDocument> {
  public:
    static Result<std::shared_ptr<ConfigDocument>> load_file(const std::string& path);
    static Result<std::shared_ptr<ConfigDocument>> load_string(std::string text,
                                                               std::string display_name);
    ConfigElement root() const;
    unsigned line_of(ptrdiff_t offset) const;
    const std::string& display_name() const { return name_; }
    // Directory of the file ("" for a string), for resolving relative paths.
    const std::string& directory() const { return dir_; }

  private:
    std::string name_, dir_, text_;
    std::vector<size_t> line_starts_;
    pugi::xml_document doc_;
};

// Parses a decimal or 0x-prefixed number; nullopt when malformed or out of range.
std::optional<uint64_t> parse_number(std::string_view text);

// A file named in <files> (Palacios' <files><file id=".." filename=".."/></files>), which
// devices refer to by id: a disk image for qemu:nvme, say.
struct ConfigFile {
    std::string id;
    std::string path;  // resolved against the config file's directory
};
// The <files> of the document `e` belongs to; errors name the offending <file>.
Result<std::vector<ConfigFile>> config_files(const ConfigElement& e);

struct VmConfig {
    std::shared_ptr<ConfigDocument> document;
    uint64_t memory_mib = 0;
    unsigned cores = 1;
    std::string guest_file;   // as written
    std::string guest_where;  // "file:line: <guest>", for errors about the image
    std::string cmdline;
    // <guest kernel="bzImage" initrd="..."/> instead of file=: a Linux kernel booted by the
    // x86 boot protocol (docs/linux-guest.md); as written, resolved like `file`.
    std::string linux_kernel;
    std::string linux_initrd;
    // <vm engine="...">: the CPU engine by name ("unicorn", "kvm", "auto"); empty when absent.
    std::string engine;
    std::string engine_where;  // "file:line: <vm>: attribute 'engine'", for errors about it
    std::vector<ConfigFile> files;
    std::vector<ConfigElement> devices;
};

inline constexpr uint64_t kMaxMemoryMib = 3072;  // RAM ends below the PCI hole at 3 GiB
inline constexpr unsigned kMaxCores = 8;

Result<VmConfig> parse_vm_config(std::shared_ptr<ConfigDocument> doc);

}  // namespace potemkin::vm
