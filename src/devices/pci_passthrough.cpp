#include "devices/pci_passthrough.hpp"

#include "devices/pci_front.hpp"
#include "hostdev/host_device.hpp"

namespace potemkin::devices {

Result<void> register_pci_passthrough(vm::DeviceClassRegistry& registry,
                                      const hostdev::TransportRegistry* transports) {
    return registry.add(
        "PCI_PASSTHROUGH",
        [transports](const vm::ConfigElement& e,
                     vm::DeviceContext& ctx) -> Result<std::unique_ptr<vm::Device>> {
            POTEMKIN_TRY(e.only_attributes({"class", "id", "bus", "hostdev", "device", "slot"}));
            auto bus = ctx.devices.reference<pci::PciBus>(e, "bus", "a PCI bus");
            if (!bus) return fail(bus.error());
            PciFrontSettings s{.bus = *bus, .transports = transports, .element = &e};
            if (e.has("hostdev") == e.has("device"))
                return fail(
                    e.error("give the physical device either as device=\"0000:03:00.0\" or as "
                            "hostdev=\"vfio:0000:03:00.0\" (exactly one of them)"));
            if (e.has("device")) {
                s.hostdev = "vfio:" + *e.attr("device");
                s.hostdev_attribute = "device";
            } else {
                s.hostdev = *e.attr("hostdev");
                auto url = hostdev::parse_url(s.hostdev);
                if (!url) return fail(e.attr_error("hostdev", url.error().message));
                if (url->scheme != "vfio")
                    return fail(
                        e.attr_error("hostdev",
                                     "PCI_PASSTHROUGH takes a vfio: URL (a physical device); "
                                     "use PCI_FRONT for other transports"));
            }
            POTEMKIN_TRY_ASSIGN(s.slot, pci_slot_attribute(e));
            auto d = PciFront::create(*e.attr("id"), ctx, s);
            if (!d) return fail(d.error());
            return std::unique_ptr<vm::Device>(std::move(*d));
        });
}

}  // namespace potemkin::devices
