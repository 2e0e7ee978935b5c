#include "vm/config.hpp"

#include <filesystem>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "common/file.hpp"

namespace potemkin::vm {

namespace {
// A configuration is a page of XML; anything this large is the wrong file.
constexpr uint64_t kMaxConfigBytes = 16ull << 20;
}  // namespace

std::optional<uint64_t> parse_number(std::string_view t) {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
    int base = 10;
    if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
        base = 16;
        t.remove_prefix(2);
    }
    if (t.empty()) return std::nullopt;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v, base);
    if (ec != std::errc() || p != t.data() + t.size()) return std::nullopt;
    return v;
}

unsigned ConfigElement::line() const {
    return doc_->line_of(node_.offset_debug());
}

std::string ConfigElement::where() const {
    std::string tag = fmt::format("<{}", node_.name());
    for (const char* key : {"class", "id"}) {
        if (auto a = node_.attribute(key)) tag += fmt::format(" {}=\"{}\"", key, a.value());
    }
    tag += ">";
    return fmt::format("{}:{}: {}", doc_->display_name(), line(), tag);
}

Error ConfigElement::error(std::string_view message) const {
    return Error{fmt::format("{}: {}", where(), message)};
}

Error ConfigElement::attr_error(std::string_view attr, std::string_view message) const {
    return Error{fmt::format("{}: attribute '{}' {}", where(), attr, message)};
}

bool ConfigElement::has(std::string_view a) const {
    return static_cast<bool>(node_.attribute(std::string(a).c_str()));
}

std::optional<std::string> ConfigElement::attr(std::string_view a) const {
    auto at = node_.attribute(std::string(a).c_str());
    if (!at) return std::nullopt;
    return std::string(at.value());
}

Result<std::string> ConfigElement::required(std::string_view a) const {
    auto v = attr(a);
    if (!v) return fail(attr_error(a, "is required"));
    if (v->empty()) return fail(attr_error(a, "is empty"));
    return *v;
}

Result<uint64_t> ConfigElement::number(std::string_view a, std::optional<uint64_t> fallback,
                                       uint64_t max) const {
    auto v = attr(a);
    if (!v) {
        if (fallback) return *fallback;
        return fail(attr_error(a, "is required"));
    }
    auto n = parse_number(*v);
    if (!n) return fail(attr_error(a, fmt::format("is not a number: '{}'", *v)));
    if (*n > max)
        return fail(attr_error(a, fmt::format("is {} but must be at most {:#x}", *v, max)));
    return *n;
}

Result<bool> ConfigElement::boolean(std::string_view a, bool fallback) const {
    auto v = attr(a);
    if (!v) return fallback;
    if (*v == "true" || *v == "yes" || *v == "1") return true;
    if (*v == "false" || *v == "no" || *v == "0") return false;
    return fail(attr_error(a, fmt::format("must be true or false, not '{}'", *v)));
}

std::optional<ConfigElement> ConfigElement::child(std::string_view n) const {
    auto c = node_.child(std::string(n).c_str());
    if (!c) return std::nullopt;
    return ConfigElement(doc_, c);
}

std::vector<ConfigElement> ConfigElement::children(std::string_view n) const {
    std::vector<ConfigElement> out;
    for (auto c : node_.children(std::string(n).c_str())) out.emplace_back(doc_, c);
    return out;
}

std::vector<ConfigElement> ConfigElement::children() const {
    std::vector<ConfigElement> out;
    for (auto c : node_.children())
        if (c.type() == pugi::node_element) out.emplace_back(doc_, c);
    return out;
}

std::string ConfigElement::text() const {
    return node_.text().as_string();
}

Result<std::string> ConfigElement::child_text(std::string_view n) const {
    auto c = child(n);
    if (!c) return fail(error(fmt::format("missing child element <{}>", n)));
    return c->text();
}

Result<uint64_t> ConfigElement::child_number(std::string_view n, uint64_t max) const {
    auto c = child(n);
    if (!c) return fail(error(fmt::format("missing child element <{}>", n)));
    auto v = parse_number(c->text());
    if (!v) return fail(c->error(fmt::format("'{}' is not a number", c->text())));
    if (*v > max) return fail(c->error(fmt::format("{} is larger than {:#x}", c->text(), max)));
    return *v;
}

Result<void> ConfigElement::only_attributes(std::initializer_list<std::string_view> allowed) const {
    for (auto a : node_.attributes()) {
        if (std::find(allowed.begin(), allowed.end(), std::string_view(a.name())) == allowed.end())
            return fail(attr_error(a.name(), "is not known here"));
    }
    return ok();
}

Result<std::shared_ptr<ConfigDocument>> ConfigDocument::load_file(const std::string& path) {
    POTEMKIN_TRY_ASSIGN(auto bytes, read_regular_file(path, {.max_bytes = kMaxConfigBytes,
                                                             .what = "configuration file"}));
    auto doc = load_string(std::string(bytes.begin(), bytes.end()), path);
    if (!doc) return doc;
    auto slash = path.find_last_of('/');
    (*doc)->dir_ = slash == std::string::npos ? "." : path.substr(0, slash);
    return doc;
}

Result<std::shared_ptr<ConfigDocument>> ConfigDocument::load_string(std::string text,
                                                                    std::string display_name) {
    std::shared_ptr<ConfigDocument> d(new ConfigDocument());
    d->name_ = std::move(display_name);
    d->text_ = std::move(text);
    d->line_starts_.push_back(0);
    for (size_t i = 0; i < d->text_.size(); ++i)
        if (d->text_[i] == '\n') d->line_starts_.push_back(i + 1);
    auto res = d->doc_.load_buffer(d->text_.data(), d->text_.size(), pugi::parse_default);
    if (!res)
        return failf("{}:{}: XML error: {}", d->name_, d->line_of(res.offset), res.description());
    return d;
}

ConfigElement ConfigDocument::root() const {
    return ConfigElement(shared_from_this(), doc_.document_element());
}

unsigned ConfigDocument::line_of(ptrdiff_t offset) const {
    if (offset < 0) return 0;
    auto it =
        std::upper_bound(line_starts_.begin(), line_starts_.end(), static_cast<size_t>(offset));
    return static_cast<unsigned>(it - line_starts_.begin());
}

Result<std::vector<ConfigFile>> config_files(const ConfigElement& e) {
    std::vector<ConfigFile> files;
    auto section = e.document().root().child("files");
    if (!section) return files;
    for (const auto& f : section->children()) {
        if (f.name() != "file") return fail(f.error("only <file> elements may appear in <files>"));
        POTEMKIN_TRY(f.only_attributes({"id", "filename"}));
        auto id = f.required("id");
        if (!id) return fail(id.error());
        auto name = f.required("filename");
        if (!name) return fail(name.error());
        if (id->empty()) return fail(f.attr_error("id", "must not be empty"));
        for (const auto& other : files)
            if (other.id == *id)
                return fail(f.attr_error("id", fmt::format("'{}' is defined twice", *id)));
        std::filesystem::path path(*name);
        if (path.is_relative() && !e.document().directory().empty())
            path = std::filesystem::path(e.document().directory()) / path;
        files.push_back(ConfigFile{*id, path.string()});
    }
    return files;
}

Result<VmConfig> parse_vm_config(std::shared_ptr<ConfigDocument> doc) {
    VmConfig cfg;
    cfg.document = doc;
    ConfigElement vm = doc->root();
    if (vm.name() != "vm")
        return fail(vm.error(fmt::format("the root element must be <vm>, not <{}>", vm.name())));
    POTEMKIN_TRY(vm.only_attributes({"class", "engine"}));
    if (auto cls = vm.attr("class"); cls && *cls != "PC")
        return fail(vm.attr_error("class", fmt::format("must be PC, not '{}'", *cls)));
    // The name is checked by the machine, which knows the engines (cpu/engine_factory.hpp).
    if (auto engine = vm.attr("engine")) {
        cfg.engine = *engine;
        cfg.engine_where = vm.where() + ": attribute 'engine'";
    }

    for (const auto& c : vm.children()) {
        if (c.name() != "memory" && c.name() != "cores" && c.name() != "guest" &&
            c.name() != "files" && c.name() != "devices")
            return fail(c.error("unknown element inside <vm>"));
    }
    auto mem = vm.child("memory");
    if (!mem) return fail(vm.error("missing child element <memory> (MiB of guest RAM)"));
    auto mib = parse_number(mem->text());
    if (!mib || *mib == 0)
        return fail(mem->error(fmt::format("'{}' is not a positive number of MiB", mem->text())));
    if (*mib > kMaxMemoryMib)
        return fail(mem->error(fmt::format(
            "{} MiB is more than the {} MiB that fit below the PCI hole", *mib, kMaxMemoryMib)));
    cfg.memory_mib = *mib;

    if (auto cores = vm.child("cores")) {
        POTEMKIN_TRY(cores->only_attributes({"count"}));
        auto n = cores->number("count", std::nullopt, kMaxCores);
        if (!n) return fail(n.error());
        if (*n == 0) return fail(cores->attr_error("count", "must be at least 1"));
        cfg.cores = static_cast<unsigned>(*n);
    }

    if (auto guest = vm.child("guest")) {
        POTEMKIN_TRY(guest->only_attributes({"file", "cmdline", "kernel", "initrd"}));
        cfg.guest_where = guest->where();
        if (guest->has("kernel")) {
            // A Linux kernel: loaded by the boot protocol, not as an ELF.
            if (guest->has("file"))
                return fail(
                    guest->attr_error("file",
                                      "conflicts with kernel=: give file= (an ELF guest) or "
                                      "kernel= (a Linux bzImage), not both"));
            cfg.linux_kernel = *guest->attr("kernel");
            cfg.linux_initrd = guest->attr("initrd").value_or("");
            if (cfg.cores != 1)
                return fail(guest->attr_error(
                    "kernel", fmt::format("a Linux guest boots on one vCPU; <cores count> is {}",
                                          cfg.cores)));
        } else {
            if (guest->has("initrd"))
                return fail(guest->attr_error("initrd", "an initrd needs kernel="));
            auto file = guest->required("file");
            if (!file) return fail(file.error());
            cfg.guest_file = *file;
        }
        cfg.cmdline = guest->attr("cmdline").value_or("");
    }

    auto files = config_files(vm);
    if (!files) return fail(files.error());
    cfg.files = std::move(*files);

    if (auto devices = vm.child("devices")) {
        for (const auto& d : devices->children()) {
            if (d.name() != "device")
                return fail(d.error("only <device> elements may appear in <devices>"));
            cfg.devices.push_back(d);
        }
    }
    return cfg;
}

}  // namespace potemkin::vm
