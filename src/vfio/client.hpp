// The kernel VFIO client: hostdev transport "vfio:DDDD:BB:DD.F" (or a sysfs path ending in
// one; docs/passthrough.md). A physical PCI function bound to vfio-pci, reached through Linux
// VFIO (<linux/vfio.h>, Documentation/driver-api/vfio.rst):
// - setup: sysfs checks (sysfs.hpp), container and group (container.hpp), the device fd;
// - regions: VFIO_DEVICE_GET_REGION_INFO with the sparse-mmap capability, so PCI_FRONT maps
//   mappable BAR areas straight into the guest; trapped accesses are pread/pwrite at the
//   region's offset on the device fd; config space likewise (vfio-pci virtualises what a user
//   must not touch: BAR writes do not move the physical BARs, the host kernel owns those);
// - DMA: guest RAM (OpenContext::memory) mapped once with VFIO_IOMMU_MAP_DMA at IOVA =
//   guest-physical, so the device reads and writes guest RAM itself, through the IOMMU; a DMA
//   outside guest RAM faults in the IOMMU (the host kernel logs a DMAR fault), never reaches
//   the VMM. HostDeviceEvents::dma_read/dma_write are never called.
// - interrupts: one eventfd per vector, VFIO_DEVICE_SET_IRQS (ACTION_TRIGGER) for INTx, MSI or
//   MSI-X as the front-end chooses (set_irqs); the remote link watches the eventfds. INTx is
//   auto-masked by vfio-pci when it fires: the line is held until the guest's EOI (ack_intx),
//   then dropped and unmasked (ACTION_UNMASK), and fires again if the device still asserts.
// - reset: VFIO_DEVICE_RESET when the device offers one (VFIO_DEVICE_FLAGS_RESET); either way
//   interrupts go back to INTx and bus mastering and decode are turned off.
//
// Built on the remote link (hostdev/remote_link.hpp): its eventfd set, poll thread and inbox
// deliver interrupts on the engine thread. There is no connection to lose: the device fd stays
// valid until close.
//
// Missing: two devices of one IOMMU group in one VMM (each client has its own container);
// the VFIO device-feature, migration and IOMMUFD interfaces; error/request eventfds (AER, the
// kernel asking for the device back); VGA and device-specific regions beyond region_read.
#pragma once

#include <memory>
#include <string>

#include "hostdev/host_device.hpp"
#include "hostdev/remote_client.hpp"

namespace potemkin::vfio {

// label defaults to "vfio:" + the canonical address. memory: guest RAM to map for DMA (null:
// nothing mapped, the device cannot DMA; probe).
struct VfioClientSettings : hostdev::RemoteClientSettings {
    std::string device;               // "0000:00:03.0", "00:03.0" or a sysfs path
    std::string sysfs_root = "/sys";  // tests point these at a fake tree
    std::string dev_root = "/dev";
    // Offer the BARs' mmap areas to the front-end (direct mapping). Off: every BAR access
    // traps and becomes a pread/pwrite (benchmarks, debugging a device through a trace).
    bool mmap = true;
};

// What the client found and did (tests, probe).
struct VfioStats {
    std::string address;        // canonical DDDD:BB:DD.F
    unsigned group = 0;         // IOMMU group number
    bool type1v2 = false;       // the container uses VFIO_TYPE1v2_IOMMU (else TYPE1)
    uint64_t dma_mappings = 0;  // VFIO_IOMMU_MAP_DMA calls in effect
    uint64_t dma_bytes = 0;     // guest RAM they cover
    uint64_t interrupts = 0;    // eventfd signals delivered (INTx, MSI, MSI-X)
};

class VfioClient final : public hostdev::RemoteClient {
  public:
    static Result<std::unique_ptr<VfioClient>> open(VfioClientSettings settings);
    VfioStats stats() const;

    class Impl;  // client_impl.hpp

  private:
    explicit VfioClient(std::shared_ptr<Impl> impl);
    Impl* impl_;  // owned by RemoteClient
};

// Register scheme "vfio": path = the device's address or sysfs path; parameters sysfs_root=DIR
// and dev_root=DIR (tests; default /sys and /dev), mmap=0|1 (default 1).
Result<void> register_vfio_transport(hostdev::TransportRegistry& transports);

}  // namespace potemkin::vfio
