#!/usr/bin/env python3
"""Loads the lwt BPF "gate" of deploy/lab/dataplane-recipe.sh MODE=bpf and
pins it where `ip route ... encap bpf xmit pinned PATH` finds it.

    lwt-gate.py PIN_PATH MARK

The program (BPF_PROG_TYPE_LWT_XMIT), four instructions, no maps:
    r2 = MARK
    *(u32 *)(r1 + 8) = r2        __sk_buff.mark (offset 8, writable here)
    r0 = BPF_LWT_REROUTE         (128): route the packet again, marked
    exit
The kernel checks the MTU of the route carrying it while forwarding (the
device's minus the route's declared headroom) before the program runs, which
is the point: a Packet Too Big to the real sender without a veth hop.
An experiment for the benchmark, not something the daemons load.
"""
import ctypes
import os
import struct
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD, BPF_OBJ_PIN = 5, 6
BPF_PROG_TYPE_LWT_XMIT = 12
BPF_LWT_REROUTE = 128


def insn(code, dst, src, off, imm):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lwt-gate.py PIN_PATH MARK")
    pin, mark = sys.argv[1], int(sys.argv[2], 0)
    libc = ctypes.CDLL(None, use_errno=True)
    program = ctypes.create_string_buffer(
        insn(0xB7, 2, 0, 0, mark)  # BPF_ALU64 | BPF_MOV | BPF_K
        + insn(0x63, 1, 2, 8, 0)  # BPF_STX | BPF_MEM | BPF_W
        + insn(0xB7, 0, 0, 0, BPF_LWT_REROUTE)
        + insn(0x95, 0, 0, 0, 0)  # BPF_JMP | BPF_EXIT
    )
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_LWT_XMIT, 4,
                     ctypes.addressof(program), ctypes.addressof(license_), 1, len(log),
                     ctypes.addressof(log), 0, 0, b"nemo_gate")
    fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, len(attr))
    if fd < 0:
        sys.exit(f"BPF_PROG_LOAD: {os.strerror(ctypes.get_errno())}: {log.value.decode()}")
    path = ctypes.create_string_buffer(pin.encode())
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(path), fd)
    if libc.syscall(SYS_BPF, BPF_OBJ_PIN, attr, len(attr)) < 0:
        sys.exit(f"BPF_OBJ_PIN {pin}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)


if __name__ == "__main__":
    main()
