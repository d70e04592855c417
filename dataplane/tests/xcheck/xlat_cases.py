#!/usr/bin/python3
"""The translator's cross-check against TAYGA (issue 31): the same packets,
built by Scapy, through nemo's translator and through TAYGA, the outputs
dissected by Scapy and compared field by field.

  xlat_cases.py run --iface s0 --to-mac 02:..   # in the sender's namespace:
      sends each case to the translator's host on `iface` (Ethernet to
      `to-mac`), captures what comes back translated, prints JSON
      {case: hex of the IP packet received, or null}
  xlat_cases.py compare < {"nemo": {...}, "tayga": {...}}
      prints JSON {case: {"nemo": fields, "tayga": fields,
      "differences": [field, ...]}}

Addresses: the peer 192.0.2.1 (2001:db8:64::c000:201 in the /96), the
tenant 192.0.2.10 mapped to 2001:db8:100::10.
"""

import json
import sys
import time

from scapy.all import (
    AsyncSniffer, Ether, ICMP, IP, IPOption_NOP, IPOption_RR, IPv6, IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, Raw, TCP, UDP, conf, get_if_hwaddr, sendp,
)
from scapy.layers.inet import IPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6PacketTooBig,
    ICMPv6TimeExceeded, IPerror6,
)

conf.verb = 0
PEER4, TENANT4 = "192.0.2.1", "192.0.2.10"
PEER6, TENANT6 = "2001:db8:64::c000:201", "2001:db8:100::10"
# A router on the IPv4 side, one on the IPv6 side (no mapping: its errors
# leave from the RFC 6791 address, 192.0.2.254 for both translators).
ROUTER4, ROUTER6 = "192.0.2.5", "2001:db8:ff::9"


def tag(name):
    return Raw(("nemo-xcheck " + name).encode())


def padded(name, length):
    """A tag filling `length` octets, so that fragments split after it."""
    text = ("nemo-xcheck " + name).encode()
    return text + b"." * (length - len(text))


def fragments4(name):
    """A UDP datagram in two IPv4 fragments, each tagged: the first holds
    the UDP header (its checksum over the whole datagram) and 56 octets."""
    whole = IP(src=PEER4, dst=TENANT4) / UDP(sport=40000, dport=7) / Raw(
        padded(name + " first", 56) + padded(name + " last", 40))
    udp = bytes(whole)[20:]
    common = dict(src=PEER4, dst=TENANT4, ttl=57, proto=17, id=0x2345)
    return [
        (name + " first", IP(flags="MF", frag=0, **common) / Raw(udp[:64])),
        (name + " last", IP(flags=0, frag=8, **common) / Raw(udp[64:])),
    ]


def fragments6(name):
    """The same in two IPv6 fragments from the tenant."""
    whole = IPv6(src=TENANT6, dst=PEER6) / UDP(sport=7, dport=40000) / Raw(
        padded(name + " first", 56) + padded(name + " last", 40))
    udp = bytes(whole)[40:]
    return [
        (name + " first", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=0x12345678) / Raw(udp[:64])),
        (name + " last", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / IPv6ExtHdrFragment(nh=17, offset=8, m=0, id=0x12345678) / Raw(udp[64:])),
    ]


def cases():
    """(name, IP packet): each with a payload of its own, to match it."""
    return fragments4("udp fragment 4to6") + fragments6("udp fragment 6to4") + [
        ("udp 4to6 zero checksum", IP(src=PEER4, dst=TENANT4, ttl=57, flags="DF")
         / UDP(sport=40000, dport=7, chksum=0) / tag("udp 4to6 zero checksum")),
        ("udp 4to6 options", IP(src=PEER4, dst=TENANT4, ttl=57, flags="DF",
                                options=[IPOption_NOP(), IPOption_RR(routers=["0.0.0.0"])])
         / UDP(sport=40000, dport=7) / tag("udp 4to6 options")),
        ("udp 6to4 extension headers", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
         / UDP(sport=7, dport=40000) / tag("udp 6to4 extension headers")),
        ("sctp 4to6", IP(src=PEER4, dst=TENANT4, ttl=57, flags="DF", proto=132)
         / tag("sctp 4to6")),
        ("sctp 6to4", IPv6(src=TENANT6, dst=PEER6, hlim=57, nh=132) / tag("sctp 6to4")),
        ("udp 4to6", IP(src=PEER4, dst=TENANT4, tos=0xb8, ttl=57, flags="DF", id=0x1234)
         / UDP(sport=40000, dport=7) / tag("udp 4to6")),
        ("udp 4to6 df clear", IP(src=PEER4, dst=TENANT4, ttl=57, flags=0, id=0x4321)
         / UDP(sport=40000, dport=7) / tag("udp 4to6 df clear")),
        ("tcp 4to6", IP(src=PEER4, dst=TENANT4, ttl=57, flags="DF")
         / TCP(sport=40001, dport=80, flags="S", seq=1000, window=64000) / tag("tcp 4to6")),
        ("echo 4to6", IP(src=PEER4, dst=TENANT4, ttl=57)
         / ICMP(type=8, id=0x77, seq=1) / tag("echo 4to6")),
        ("echo reply 4to6", IP(src=PEER4, dst=TENANT4, ttl=57)
         / ICMP(type=0, id=0x78, seq=2) / tag("echo reply 4to6")),
        ("udp 6to4", IPv6(src=TENANT6, dst=PEER6, tc=0xb8, hlim=57)
         / UDP(sport=7, dport=40000) / tag("udp 6to4")),
        ("udp 6to4 large", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / UDP(sport=7, dport=40000) / Raw(b"x" * 1300) / tag("udp 6to4 large")),
        ("tcp 6to4", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / TCP(sport=80, dport=40001, flags="SA", seq=2000, ack=1001, window=64000)
         / tag("tcp 6to4")),
        ("echo 6to4", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / ICMPv6EchoRequest(id=0x79, seq=3, data=b"nemo-xcheck echo 6to4")),
        ("echo reply 6to4", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / ICMPv6EchoReply(id=0x7a, seq=4, data=b"nemo-xcheck echo reply 6to4")),
        # ICMP errors about the tenant's packets, the packet in error quoted.
        ("port unreachable 4to6", IP(src=ROUTER4, dst=TENANT4, ttl=57)
         / ICMP(type=3, code=3)
         / IPerror(src=TENANT4, dst=PEER4, ttl=9, proto=17, id=0x55)
         / UDPerror(sport=7, dport=40000) / tag("port unreachable 4to6")),
        ("fragmentation needed 4to6", IP(src=ROUTER4, dst=TENANT4, ttl=57)
         / ICMP(type=3, code=4, nexthopmtu=1400)
         / IPerror(src=TENANT4, dst=PEER4, ttl=9, proto=17, flags="DF")
         / UDPerror(sport=7, dport=40000) / tag("fragmentation needed 4to6")),
        ("time exceeded 4to6", IP(src=ROUTER4, dst=TENANT4, ttl=57)
         / ICMP(type=11, code=0)
         / IPerror(src=TENANT4, dst=PEER4, ttl=1, proto=17)
         / UDPerror(sport=7, dport=40000) / tag("time exceeded 4to6")),
        ("packet too big 6to4", IPv6(src=ROUTER6, dst=PEER6, hlim=57)
         / ICMPv6PacketTooBig(mtu=1400)
         / IPerror6(src=PEER6, dst=TENANT6, hlim=9, nh=17)
         / UDPerror(sport=40000, dport=7) / tag("packet too big 6to4")),
        ("port unreachable 6to4", IPv6(src=TENANT6, dst=PEER6, hlim=57)
         / ICMPv6DestUnreach(code=4)
         / IPerror6(src=PEER6, dst=TENANT6, hlim=9, nh=17)
         / UDPerror(sport=40000, dport=7) / tag("port unreachable 6to4")),
        ("time exceeded 6to4", IPv6(src=ROUTER6, dst=PEER6, hlim=57)
         / ICMPv6TimeExceeded(code=0)
         / IPerror6(src=PEER6, dst=TENANT6, hlim=1, nh=17)
         / UDPerror(sport=40000, dport=7) / tag("time exceeded 6to4")),
    ]


def marker(packet_bytes):
    at = packet_bytes.find(b"nemo-xcheck ")
    if at < 0:
        return None
    rest = packet_bytes[at + len(b"nemo-xcheck "):]
    # The longest name that matches: "udp 4to6" begins "udp 4to6 df clear".
    names = sorted((name for name, _ in cases()), key=len, reverse=True)
    return next((name for name in names if rest.startswith(name.encode())), None)


def run(iface, to_mac):
    mine = get_if_hwaddr(iface)
    received = {name: None for name, _ in cases()}
    def keep(frame):
        if frame.src == mine or not (IP in frame or IPv6 in frame):
            return
        layer = frame[IP] if IP in frame else frame[IPv6]
        raw = bytes(layer)
        name = marker(raw)
        if name and received[name] is None:
            received[name] = raw.hex()
    sniffer = AsyncSniffer(iface=iface, prn=keep, store=False)
    sniffer.start()
    time.sleep(0.5)
    for _, packet in cases():
        sendp(Ether(dst=to_mac, src=mine) / packet, iface=iface)
        time.sleep(0.05)
    time.sleep(1.0)
    sniffer.stop()
    print(json.dumps(received))


def ones_complement_ok(data):
    """RFC 1071: the sum of a header with its checksum is all ones."""
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xffff:
        total = (total & 0xffff) + (total >> 16)
    return total == 0xffff


def transport_checksum_ok(raw):
    """The transport checksum of an IP packet, summed here (RFC 1071) with
    the pseudo-header its family has (ICMPv4: none)."""
    import ipaddress
    if raw[0] >> 4 == 4:
        header = (raw[0] & 0x0f) * 4
        protocol, upper = raw[9], raw[header:int.from_bytes(raw[2:4], "big")]
        pseudo = b"" if protocol == 1 else (
            raw[12:20] + bytes([0, protocol]) + len(upper).to_bytes(2, "big"))
    else:
        protocol, upper = raw[6], raw[40:40 + int.from_bytes(raw[4:6], "big")]
        pseudo = raw[8:40] + len(upper).to_bytes(4, "big") + bytes([0, 0, 0, protocol])
    del ipaddress
    data = pseudo + upper + (b"\0" if len(upper) % 2 else b"")
    return ones_complement_ok(data)


def fields(hex_packet):
    """What RFC 7915 sets, as Scapy dissects it; checksums verified by
    Scapy recomputing them."""
    if hex_packet is None:
        return None
    raw = bytes.fromhex(hex_packet)
    out = {}
    if raw[0] >> 4 == 4:
        ip = IP(raw)
        out.update(family=4, tos=ip.tos, length=ip.len, id=ip.id, flags=str(ip.flags),
                   frag=ip.frag, ttl=ip.ttl, proto=ip.proto, src=ip.src, dst=ip.dst)
        again = IP(bytes(ip))
        del again.chksum
        out["header_checksum_ok"] = IP(bytes(again)).chksum == ip.chksum
        upper = ip.payload
        fragment = ip.frag != 0 or "MF" in str(ip.flags)
        rest = raw[(raw[0] & 0x0f) * 4:ip.len]
    else:
        ip = IPv6(raw)
        out.update(family=6, tc=ip.tc, flow=ip.fl, length=ip.plen, next=ip.nh, hlim=ip.hlim,
                   src=ip.src, dst=ip.dst)
        upper = ip.payload
        fragment = isinstance(upper, IPv6ExtHdrFragment)
        if fragment:
            out.update(frag_next=upper.nh, frag_offset=upper.offset, frag_m=upper.m,
                       frag_id=upper.id)
        rest = raw[48:40 + ip.plen] if fragment else None
    if fragment:
        # A fragment: its octets as they are (the first one's UDP
        # checksum among them, summed over the whole datagram).
        out["fragment_octets"] = rest.hex()
        return out
    kind = upper.__class__.__name__
    out["upper"] = kind
    if hasattr(upper, "sport"):
        out.update(sport=upper.sport, dport=upper.dport)
    if kind == "TCP":
        out.update(seq=upper.seq, ack=upper.ack, tcp_flags=str(upper.flags), window=upper.window)
    if kind == "ICMP" and upper.type in (0, 8):
        out.update(type=upper.type, code=upper.code, ident=upper.id, seq=upper.seq)
    error = (kind == "ICMP" and upper.type in (3, 11, 12)) or kind in (
        "ICMPv6DestUnreach", "ICMPv6PacketTooBig", "ICMPv6TimeExceeded", "ICMPv6ParamProblem")
    if error:
        head = bytes(upper)[:8]
        out.update(type=head[0], code=head[1], rest=head[4:8].hex())
        quoted = upper.payload
        if quoted.__class__.__name__ == "IPerror":
            out.update(inner_src=quoted.src, inner_dst=quoted.dst, inner_ttl=quoted.ttl,
                       inner_proto=quoted.proto, inner_length=quoted.len,
                       inner_header_checksum_ok=ones_complement_ok(bytes(quoted)[:20]))
            rest = bytes(quoted)[20:]
        else:
            out.update(inner_src=quoted.src, inner_dst=quoted.dst, inner_ttl=quoted.hlim,
                       inner_proto=quoted.nh, inner_length=quoted.plen)
            rest = bytes(quoted)[40:]
        out["quoted_transport"] = rest.hex()
    if kind.startswith("ICMPv6Echo"):
        out.update(type=upper.type, code=upper.code, ident=upper.id, seq=upper.seq)
    # Other protocols' checksums are theirs (SCTP's covers no pseudo-header).
    if (out.get("proto") if out["family"] == 4 else out.get("next")) in (1, 6, 17, 58):
        out["checksum_ok"] = transport_checksum_ok(raw)
    out["payload"] = bytes(upper.payload).hex() if kind not in ("Raw",) else bytes(upper).hex()
    if kind.startswith("ICMPv6Echo"):
        out["payload"] = bytes(upper.data).hex()
    if kind == "ICMP":
        out["payload"] = bytes(upper.payload).hex()
    if error:
        out["payload"] = out["quoted_transport"]
    return out


def compare():
    both = json.load(sys.stdin)
    report = {}
    for name, _ in cases():
        a, b = fields(both["nemo"].get(name)), fields(both["tayga"].get(name))
        differences = []
        if a is not None and b is not None:
            differences = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        report[name] = {"nemo": a, "tayga": b, "differences": differences}
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
        run(args["--iface"], args["--to-mac"])
    elif sys.argv[1] == "compare":
        compare()
    else:
        sys.exit("usage: xlat_cases.py run --iface IF --to-mac MAC | compare")
