#include "models/builtin.hpp"

#include "models/edu.hpp"
#include "models/multibar.hpp"

namespace potemkin::models {

Result<void> register_builtin_models(sdk::ModelRegistry& registry) {
    POTEMKIN_TRY(registry.add("edu", "QEMU's educational device (1234:11e8): factorial, DMA, MSI",
                              &Edu::create));
    POTEMKIN_TRY(registry.add("multibar",
                              "test device with I/O, MEM32, MEM64 BARs, ROM, MSI and MSI-X; "
                              "pcie=1: a PCIe endpoint with AER, serial number and a VSEC",
                              &Multibar::create));
    return ok();
}

}  // namespace potemkin::models
