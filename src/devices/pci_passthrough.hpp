// PCI_PASSTHROUGH: a physical PCI function given to the guest through kernel VFIO (the Palacios
// seed's class name; docs/passthrough.md). It is PCI_FRONT over a "vfio:" host device, with
// the configuration a passthrough user expects:
//
//   <device class="PCI_PASSTHROUGH" id="nic0" bus="pci0" device="0000:03:00.0" slot="4"/>
//   <device class="PCI_PASSTHROUGH" id="nic0" bus="pci0" hostdev="vfio:0000:03:00.0"/>
//
// Exactly one of device= (an address or sysfs path) and hostdev= (a vfio: URL) is required;
// another scheme in hostdev= is an error pointing at PCI_FRONT.
//
// How it differs from the Palacios seed's passthrough: the seed programmed the physical BARs
// with host-physical addresses and remapped guest accesses there, and copied every DMA through
// its own ioctls; here the IOMMU maps guest RAM once at IOVA = guest-physical (the device DMAs
// into guest RAM by itself and nowhere else), the host kernel keeps the physical BARs where it
// put them while their mappable parts are mmapped into the guest wherever the guest puts the
// BAR, and interrupts arrive as eventfds (INTx, MSI, MSI-X). Everything PCI_FRONT shadows
// (BARs, command, MSI/MSI-X, the interrupt line) is shadowed the same way.
#pragma once

#include "common/result.hpp"
#include "vm/device.hpp"

namespace potemkin::hostdev {
class TransportRegistry;
}

namespace potemkin::devices {

Result<void> register_pci_passthrough(vm::DeviceClassRegistry& registry,
                                      const hostdev::TransportRegistry* transports = nullptr);

}  // namespace potemkin::devices
