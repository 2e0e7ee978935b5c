#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the wire formats in
docs/vfio-user.md and docs/interop.md: a few valid sessions per target, so that the fuzzer starts
from messages the code accepts and mutates from there. Rerun after a format change."""
import json
import os
import struct
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- vfio-user: 16-byte header (msg_id u16, cmd u16, msg_size u32, flags u32, error u32)
def vfu(msg_id, cmd, payload=b"", flags=0, error=0):
    return struct.pack("<HHIII", msg_id, cmd, 16 + len(payload), flags, error) + payload


caps = json.dumps({"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576,
                                    "twin_socket": {"supported": True}}}).encode() + b"\0"
version = vfu(1, 1, struct.pack("<HH", 0, 2) + caps)
info = vfu(2, 4, struct.pack("<IIII", 32, 0, 0, 0))
region_info = b"".join(vfu(3 + i, 5, struct.pack("<IIIIQQ", 32, 0, i, 0, 0, 0)) for i in range(9))
irq_info = b"".join(vfu(20 + i, 7, struct.pack("<IIII", 16, 0, i, 0)) for i in range(5))
cfg_read = vfu(30, 9, struct.pack("<QII", 0, 7, 64))
bar_write = vfu(31, 10, struct.pack("<QII", 8, 0, 4) + struct.pack("<I", 5))
bar_read = vfu(32, 9, struct.pack("<QII", 8, 0, 4))
dma_map = vfu(33, 2, struct.pack("<IIQQQ", 32, 3, 0, 0x10000, 0x10000))
dma_unmap = vfu(34, 3, struct.pack("<IIQQ", 32, 0, 0x10000, 0x10000))
set_irqs = vfu(35, 8, struct.pack("<IIIII", 20, 0x20 | 1, 0, 0, 1))  # INTx trigger, no data
cfg_write = vfu(36, 10, struct.pack("<QII", 4, 7, 2) + struct.pack("<H", 0x6))
reset = vfu(37, 13)
edu_dma = b"".join(vfu(40 + i, 10, struct.pack("<QII", off, 0, 8) + struct.pack("<Q", v))
                   for i, (off, v) in enumerate([(0x80, 0x40000), (0x88, 0x10000),
                                                 (0x90, 16), (0x98, 3)]))
session = version + info + region_info + irq_info + cfg_read + bar_write + bar_read
write("vfio_user_server", "version", version)
write("vfio_user_server", "session", session)
write("vfio_user_server", "dma", version + dma_map + cfg_write + edu_dma + bar_read + dma_unmap)
write("vfio_user_server", "irqs_reset", version + set_irqs + reset + cfg_read)
write("vfio_user_server", "before_version", info + version)

REPLY = 1
write("vfio_user_replies", "version", vfu(1, 1, struct.pack("<HH", 0, 2) + caps, REPLY))
write("vfio_user_replies", "info", vfu(2, 4, struct.pack("<IIII", 16, 3, 9, 5), REPLY))
sparse = struct.pack("<HHIII", 1, 1, 0, 1, 0) + struct.pack("<QQ", 0, 0x1000)
write("vfio_user_replies", "region_sparse",
      vfu(3, 5, struct.pack("<IIIIQQ", 32 + len(sparse), 0xF, 0, 32, 0x1000, 0) + sparse, REPLY))
write("vfio_user_replies", "read_reply", vfu(4, 9, struct.pack("<QII", 0, 7, 4) + b"\x34\x12\xe8\x11", REPLY))
write("vfio_user_replies", "dma_requests",
      vfu(0x8000, 11, struct.pack("<QQ", 0x10000, 8)) +
      vfu(0x8001, 12, struct.pack("<QQ", 0x10000, 4) + b"abcd"))
write("vfio_user_replies", "error", vfu(5, 9, b"", REPLY | 0x20, 22))

# ---- mpqemu: header cmd i32, pad, size u64 (16 bytes), then payload.
def mpq(cmd, payload=b""):
    return struct.pack("<iIQ", cmd, 0, len(payload)) + payload


conf_read = mpq(3, struct.pack("<IIi", 0, 0, 4))
conf_write = mpq(2, struct.pack("<IIi", 4, 6, 2))
bar_w = mpq(4, struct.pack("<QQIB7x", 0xfe000008, 5, 4, 1))
bar_r = mpq(5, struct.pack("<QQIB7x", 0xfe000008, 0, 4, 1))
write("mpqemu_server", "config", conf_read + conf_write + conf_read)
write("mpqemu_server", "bars", conf_write + mpq(2, struct.pack("<IIi", 0x10, 0xfe000000, 4)) + bar_w + bar_r)
write("mpqemu_server", "reset", mpq(7) + conf_read)
write("mpqemu_codec", "requests", conf_read + conf_write + bar_w + bar_r + mpq(7))
write("mpqemu_codec", "ret", mpq(1, struct.pack("<Q", 0x11e81234)) + mpq(1))

# ---- VM configuration (docs/config.md)
write("vm_config", "example", b"""<vm class="PC">
  <memory>64</memory>
  <cores count="1"/>
  <guest file="pcitest.elf" cmdline="verbose=1"/>
  <files><file id="disk0" filename="disk.raw"/></files>
  <devices>
    <device class="PCI" id="pci0"/>
    <device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="3"/>
    <device class="GENERIC" id="spy" forward="host_device" hostdev="inproc:multibar">
      <ports><start>0x3f8</start><end>0x3ff</end><mode>PRINT_AND_IGNORE</mode></ports>
    </device>
    <device class="TEST_DEVICE" id="t0" port="0x700" mmio="0xd0000000"/>
  </devices>
</vm>
""")

write("vm_config", "minimal", b"<vm><memory>16</memory><guest file=\"hello.elf\"/></vm>")

write("capabilities_json", "full", caps[:-1])
write("capabilities_json", "qemu", json.dumps({"capabilities": {
    "migration": {"pgsize": 4096, "max_bitmap_size": 1048576}, "max_msg_fds": 16,
    "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535,
    "write_multiple": True}}).encode())
write("capabilities_json", "empty", b"{}")
# ---- PCI front-end: 8-byte records (function, offset, op, 0, u32 value), docs in the target.
def rec(fn, off, op, value):
    return struct.pack("<BBBBI", fn, off, op, 0, value)


W4, R4, W2, MMIO_W4, MMIO_R4 = 0b101, 0b100, 0b011, 0b1101, 0b1100
write("pci_front_config", "assign", b"".join([
    rec(0, 0x10, W4, 0xffffffff), rec(0, 0x10, R4, 0), rec(0, 0x10, W4, 0xfe000000),
    rec(0, 0x04, W2, 0x0006), rec(0, 0, MMIO_W4, 0x08), rec(0, 0, MMIO_R4, 0x08),
    rec(1, 0x18, W4, 0xfd000000), rec(1, 0x1c, W4, 0), rec(1, 0x30, W4, 0xfc000001),
    rec(1, 0x04, W2, 0x0007), rec(1, 2, MMIO_R4, 0x10)]))
write("pci_front_config", "msi", b"".join([
    rec(0, 0x40, R4, 0), rec(0, 0x44, W4, 0xfee00000), rec(0, 0x48, W4, 0),
    rec(0, 0x4c, W2, 0x41), rec(0, 0x42, W2, 0x1), rec(1, 0x04, W2, 0x0400)]))
sys.exit(0)
