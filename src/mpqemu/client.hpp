// The mpqemu client: potemkin is the front-end (QEMU's x-pci-proxy-dev role) and a QEMU process
// started with `-machine x-remote` hosts the device (docs/interop.md, "QEMU hosts the device,
// potemkin is the front-end"; wire format ../shared/protocols/mpqemu.md). Transports:
//   mpqemu-fd:N              speak mpqemu over an already connected socket, fd N (taken over)
//   qemu:DEVICE[,k=v...]     spawn QEMU hosting DEVICE, e.g. qemu:nvme,drive=disk.raw,serial=pk1
//
// What the protocol gives and how it maps onto HostDevice:
// - Config space: PCI_CFGREAD/PCI_CFGWRITE of 1, 2 or 4 bytes. The remote kills itself on an
//   access with offset + 4 > 256, so only the first 256 bytes are reachable: bytes 0xFD-0xFF
//   are read through the dword at 0xFC; anything at 256 and above fails locally.
// - Region info: probed from the remote's BAR registers the standard way (save, write
//   all-ones, read back, restore), 64-bit BARs as mem64 + absent upper slot, prefetchable kept;
//   the ROM BAR at 0x30 with 0xFFFFF800.
// - BARs: BAR_READ/BAR_WRITE take absolute addresses in the remote's own address spaces. The
//   client places the BARs there itself (memory BARs naturally aligned from `mem_base`, above
//   guest RAM; I/O BARs from `io_base`), enables decode in the remote's command register and
//   keeps it enabled whatever the guest writes to its (local, PCI_FRONT) command register;
//   bus master and interrupt disable pass through. region_read/region_write(index, offset)
//   become accesses at base + offset of size 1, 2, 4 or 8; an access outside a BAR or to an
//   absent BAR fails locally (the remote would exit on it). Guest writes to BAR/ROM registers
//   are never forwarded.
// - DMA: SYNC_SYSMEM hands the remote the guest RAM memfd (one entry per RAM region).
// - INTx: SET_IRQFD with (irqfd, resamplefd). The remote writes irqfd when its line rises; a
//   thread polls it and asserts intx(true) on the engine thread. The line stays asserted until
//   ack_intx() (PCI_FRONT calls it on the guest's EOI of this line): then intx(false) is sent
//   and the resamplefd written, and the remote writes irqfd again if the device still asserts
//   (KVM's resampling irqfd, done in the VMM). No MSI/MSI-X (x-remote has none).
// - Reset: DEVICE_RESET, waiting for RET; the BAR layout and decode are programmed again.
// - Death: a closed socket, I/O error or reply timeout marks the remote gone: reads return
//   all-ones (and an error), writes are dropped, and HostDeviceEvents::disconnected() is sent
//   once. With `respawn` (qemu:...?respawn=1) a new QEMU is started and set up again, and
//   reconnected() follows.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "common/unique_fd.hpp"
#include "hostdev/host_device.hpp"
#include "hostdev/remote_client.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::mpqemu {

class QemuProcess;

// label names the device (the URL); memory null: no SYNC_SYSMEM (no DMA).
struct MpqemuClientSettings : hostdev::RemoteClientSettings {
    UniqueFd socket;  // connected AF_UNIX stream socket to the remote (taken over)
    // The remote's private BAR layout. Memory BARs from max(mem_base, top of guest RAM rounded
    // up to 1 MiB); I/O BARs from io_base.
    uint64_t mem_base = 0xE000'0000;
    uint32_t io_base = 0xC000;
    // The QEMU process behind the socket, killed and reaped on close(); null for mpqemu-fd.
    std::unique_ptr<QemuProcess> process;
    // Null: a lost remote stays lost. Otherwise called on the client's thread after a loss to
    // start a new remote (`qemu:...?respawn=1`); the client then restores guest RAM, the
    // interrupt eventfds, the BAR layout and the config bytes the guest wrote, and sends
    // HostDeviceEvents::reconnected(). The device's own state (registers, queues) is new.
    std::function<Result<std::pair<UniqueFd, std::unique_ptr<QemuProcess>>>()> respawn;
    std::chrono::milliseconds respawn_interval{500};  // between failed attempts
};

// A BAR as the client sees it in the remote.
struct MpqemuBar {
    pci::BarKind kind = pci::BarKind::mem32;  // meaningful when size != 0
    uint64_t size = 0;
    bool prefetchable = false;
    uint64_t base = 0;  // where the client placed it in the remote
};

// The HostDevice calls are hostdev::RemoteClient's; the requests they become, client.cpp's.
// ack_intx(), called on the guest's EOI for this device's INTx (and safe to call any time),
// deasserts the line locally and writes the resamplefd, so the remote fires the irqfd again if
// the device still holds its line.
class MpqemuClient final : public hostdev::RemoteClient {
  public:
    static Result<std::unique_ptr<MpqemuClient>> open(MpqemuClientSettings settings);

    // ---- Introspection (tests) ----
    MpqemuBar bar(uint32_t index) const;  // 0-5 BARs, 6 the ROM
    pid_t qemu_pid() const;               // -1 without a process
    uint64_t respawns() const;

    class Impl;  // shared with the poll thread; client_impl.hpp

  private:
    explicit MpqemuClient(std::shared_ptr<Impl> impl);
    Impl* impl_;  // owned by RemoteClient
};

// Parsed `qemu:` URL path: "DEVICE[,k=v...]".
struct QemuDeviceSpec {
    std::string device;
    std::string drive;  // as written (relative paths not resolved yet)
    std::vector<std::pair<std::string, std::string>> props;
};
Result<QemuDeviceSpec> parse_qemu_device(std::string_view path);

// Registers "mpqemu-fd" and "qemu" (docs/interop.md for the URL formats).
Result<void> register_mpqemu_transports(hostdev::TransportRegistry& transports);

}  // namespace potemkin::mpqemu
