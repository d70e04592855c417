#!/usr/bin/python3
"""The probes of bench/xlat-mapping.sh: UDP datagrams from an IPv4 host to
tenants' IPv4 addresses, received by the tenant's VM on IPv6 after the
translator.

  xlat_probe.py send --to 192.0.2.130 --every-us 200 [--seconds 3]
      sends datagrams to port 9000, each holding its sequence number and
      the time it left (CLOCK_REALTIME, ns: one clock for every namespace
      of the host), until killed or the seconds are over
  xlat_probe.py receive --port 9000 --out FILE
      writes one JSON line per destination the first time a datagram to it
      arrives ({"dst", "first_ns", "sent_ns"}), and on SIGTERM one
      {"dst", "received", "highest"} per destination: what arrived, and the
      highest sequence number (so that what was lost is highest + 1 -
      received)
"""

import json
import signal
import socket
import struct
import sys
import time

PORT = 9000


def send(to, every_us, seconds):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    step = every_us * 1000
    start = time.monotonic_ns()
    end = start + int(seconds * 1e9) if seconds else None
    seq = 0
    while end is None or time.monotonic_ns() < end:
        try:
            sock.sendto(struct.pack("!QQ", seq, time.time_ns()), (to, PORT))
        except OSError:
            pass  # no route yet, a full buffer: the next one goes
        seq += 1
        deadline = start + seq * step
        while time.monotonic_ns() < deadline:
            remaining = deadline - time.monotonic_ns()
            if remaining > 200_000:
                time.sleep((remaining - 100_000) / 1e9)


def receive(port, out):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    sock.bind(("::", port))
    seen = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    sock.settimeout(0.2)
    with open(out, "a", buffering=1) as log:
        log.write(json.dumps({"ready": True}) + "\n")
        while not stop:
            try:
                data, ancillary, _, _ = sock.recvmsg(64, socket.CMSG_SPACE(20))
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            now = time.time_ns()
            if len(data) < 16:
                continue
            dst = None
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    dst = socket.inet_ntop(socket.AF_INET6, value[:16])
            seq, sent = struct.unpack("!QQ", data[:16])
            record = seen.get(dst)
            if record is None:
                record = seen[dst] = {"received": 0, "highest": 0}
                log.write(json.dumps({"dst": dst, "first_ns": now, "sent_ns": sent}) + "\n")
            record["received"] += 1
            record["highest"] = max(record["highest"], seq)
        for dst, record in seen.items():
            log.write(json.dumps({"dst": dst, **record}) + "\n")


if __name__ == "__main__":
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    if sys.argv[1] == "send":
        send(args["--to"], int(args.get("--every-us", "1000")), float(args.get("--seconds", "0")))
    elif sys.argv[1] == "receive":
        receive(int(args.get("--port", PORT)), args["--out"])
    else:
        sys.exit(__doc__)
