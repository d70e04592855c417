#!/usr/bin/python3
"""Mobility Header test cases built by Scapy, an implementation nemo did not write.

Prints a JSON list on stdout. Each case holds a whole IPv6 packet (hex) as
Scapy builds it, with Scapy's own padding, alignment and checksum (Scapy picks
the pseudo-header addresses from the Home Address option and the type 2
routing header itself), and the facts nemo must decode from it. Where a case
is authenticated, the RFC 4285 authenticator is computed here with Python's
hmac module, independently of nemo's code.

Scapy 2.5 has no class for the options of Dual-Stack Mobile IPv6 (RFC
5555 §3.1, §3.2): they are defined below from the RFC's figures, with Scapy's
fields and its 4n alignment machinery, and registered for dissection. A
DSMIPv6 message travels in UDP over IPv4 (RFC 5555 §4.1: IPv4, UDP to port
4191, IPv6, Mobility Header); its RFC 4285 authenticator covers the IPv4
care-of address in its IPv4-mapped form (::ffff:a.b.c.d), the only way the
128-bit care-of field can hold it.

Run by nemo/tests/xcheck.rs with /usr/bin/python3 (Debian's python3-scapy).
"""

import hashlib
import hmac
import json
import socket
import sys
import warnings

warnings.filterwarnings("ignore")

import scapy.layers.inet6 as inet6  # noqa: E402
from scapy.fields import BitField, ByteField, IntField, IPField, ShortField  # noqa: E402
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    HAO,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrRouting,
    MIP6MH_BA,
    MIP6MH_BE,
    MIP6MH_BRR,
    MIP6MH_BU,
    MIP6MH_HoTI,
    MIP6OptAltCoA,
    MIP6OptBRAdvice,
    MIP6OptMNID,
    MIP6OptMobNetPrefix,
    MIP6OptMsgAuth,
    MIP6OptReplayProtection,
    MIP6OptUnknown,
    _MIP6OptAlign,
    in6_chksum,
)


class MIP6OptIPv4HoA(_MIP6OptAlign):
    """RFC 5555 §3.1.1, Figure 1."""
    name = "MIPv6 Option - IPv4 Home Address"
    fields_desc = [ByteField("otype", 29), ByteField("olen", 6),
                   BitField("plen", 32, 6), BitField("P", 0, 1), BitField("res", 0, 9),
                   IPField("hoa", "0.0.0.0")]
    x = 4
    y = 0


class MIP6OptIPv4AddrAck(_MIP6OptAlign):
    """RFC 5555 §3.2.1, Figure 4 (type 30, as IANA registered it)."""
    name = "MIPv6 Option - IPv4 Address Acknowledgement"
    fields_desc = [ByteField("otype", 30), ByteField("olen", 6),
                   ByteField("status", 0), BitField("plen", 32, 6), BitField("res", 0, 2),
                   IPField("hoa", "0.0.0.0")]
    x = 4
    y = 0


class MIP6OptNATDetection(_MIP6OptAlign):
    """RFC 5555 §3.2.2, Figure 5."""
    name = "MIPv6 Option - NAT Detection"
    fields_desc = [ByteField("otype", 31), ByteField("olen", 6),
                   BitField("F", 0, 1), BitField("res", 0, 15), IntField("refresh", 0)]
    x = 4
    y = 0


class MIP6OptIPv4CoA(_MIP6OptAlign):
    """RFC 5555 §3.1.2, Figure 2."""
    name = "MIPv6 Option - IPv4 Care-of Address"
    fields_desc = [ByteField("otype", 32), ByteField("olen", 6),
                   ShortField("res", 0), IPField("coa", "0.0.0.0")]
    x = 4
    y = 0


for _cls in (MIP6OptIPv4HoA, MIP6OptIPv4AddrAck, MIP6OptNATDetection, MIP6OptIPv4CoA):
    inet6.moboptcls[_cls().otype] = _cls

# RFC 5555 §3.1.3: F follows P, the top bit of the field Scapy calls reserved.
F_FLAG = 0x100
DSMIP_PORT = 4191
HA4 = "192.0.2.1"
COA4 = "192.0.2.10"
NAT4 = "192.0.2.99"

HA = "2001:db8:1::1"
HOA = "2001:db8:1::100"
COA = "2001:db8:2::10"
KEY = bytes(range(1, 21))
SPI = 0x1000
TIMESTAMP = 0xE9A1B2C3_12345678
PLACEHOLDER = 0xAA


def a16(addr):
    return socket.inet_pton(socket.AF_INET6, addr)


def ipv6_offset(raw):
    """Offset of the IPv6 packet: 0, or after IPv4 and UDP (RFC 5555 §4.1)."""
    return (raw[0] & 0x0F) * 4 + 8 if raw[0] >> 4 == 4 else 0


def mh_offset(raw):
    """Offset of the Mobility Header in an IPv6 packet (maybe in UDP in
    IPv4), walking headers."""
    base = ipv6_offset(raw)
    nh, off = raw[base + 6], base + 40
    while nh != 135:
        nh, off = raw[off], off + (raw[off + 1] + 1) * 8
    return off


def sign(build, algorithm, care_of, home, key=KEY, spi=SPI):
    """Builds the packet twice: once to find the bytes the authenticator
    covers, once with the authenticator in place and Scapy's checksum."""
    length = 12 if algorithm == "hmac-sha1-96" else 32
    placeholder = bytes([PLACEHOLDER]) * length
    raw = bytes(build(placeholder, 0))
    mh = bytearray(raw[mh_offset(raw):])
    marker = bytes([9, 5 + length, 1]) + spi.to_bytes(4, "big") + placeholder
    spi_end = mh.index(marker) + 7
    mh[4:6] = b"\0\0"
    data = a16(care_of) + a16(home) + bytes(mh[:spi_end])
    digest = hashlib.sha1 if algorithm == "hmac-sha1-96" else hashlib.sha256
    tag = hmac.new(key, data, digest).digest()[:length]
    return bytes(build(tag, None)), tag


def bu_nemo(algorithm):
    def build(tag, cksum):
        return (
            IPv6(src=COA, dst=HA)
            / IPv6ExtHdrDestOpt(options=[HAO(hoa=HOA)])
            / MIP6MH_BU(
                seq=0x1234,
                flags="AHR",
                mhtime=0x0100,
                cksum=cksum,
                options=[
                    MIP6OptMobNetPrefix(plen=56, prefix="2001:db8:100::"),
                    MIP6OptMobNetPrefix(plen=64, prefix="2001:db8:200:1::"),
                    MIP6OptMNID(id=b"mr@acme.example"),
                    MIP6OptReplayProtection(timestamp=TIMESTAMP),
                    MIP6OptMsgAuth(mspi=SPI, authdata=tag),
                ],
            )
        )

    packet, tag = sign(build, algorithm, COA, HOA)
    return {
        "name": "bu-nemo-" + algorithm,
        "hex": packet.hex(),
        "auth": {"algorithm": algorithm, "key": KEY.hex(), "care_of": COA, "home": HOA},
        "expect": {
            "mh_type": 5,
            "sequence": 0x1234,
            "flags": "AHR",
            "lifetime": 0x0100,
            "mnps": ["2001:db8:100::/56", "2001:db8:200:1::/64"],
            "nai": "mr@acme.example",
            "timestamp": TIMESTAMP,
            "spi": SPI,
            "auth_data": tag.hex(),
            "home_address_option": HOA,
            "source": COA,
            "destination": HA,
        },
    }


def ba_nemo(algorithm):
    def build(tag, cksum):
        return (
            IPv6(src=HA, dst=COA)
            / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOA])
            / MIP6MH_BA(
                status=0,
                flags="R",
                seq=0x1234,
                mhtime=0x0096,
                cksum=cksum,
                options=[
                    MIP6OptBRAdvice(rinter=0x0080),
                    MIP6OptReplayProtection(timestamp=TIMESTAMP),
                    MIP6OptMsgAuth(mspi=SPI, authdata=tag),
                ],
            )
        )

    packet, tag = sign(build, algorithm, COA, HOA)
    return {
        "name": "ba-nemo-" + algorithm,
        "hex": packet.hex(),
        "auth": {"algorithm": algorithm, "key": KEY.hex(), "care_of": COA, "home": HOA},
        "expect": {
            "mh_type": 6,
            "status": 0,
            "flags": "R",
            "sequence": 0x1234,
            "lifetime": 0x0096,
            "refresh_interval": 0x0080,
            "timestamp": TIMESTAMP,
            "spi": SPI,
            "auth_data": tag.hex(),
            "type2_home_address": HOA,
            "source": HA,
            "destination": COA,
        },
    }


def mapped(address):
    """The IPv4-mapped IPv6 form of an IPv4 address (RFC 4291 §2.5.5.2)."""
    return "::ffff:" + address


def bu_dsmip(algorithm):
    """A mobile router behind a NAT (RFC 5555 §4.2): its BU as the home
    agent receives it, from the NAT's address, with the IPv4 care-of
    address option, an IPv4 home address, and F set."""
    def build(tag, cksum):
        return (
            IP(src=NAT4, dst=HA4)
            / UDP(sport=40000, dport=DSMIP_PORT)
            / IPv6(src=HOA, dst=HA)
            / MIP6MH_BU(
                seq=0x2345,
                flags="AHR",
                reserved=F_FLAG,
                mhtime=0x0040,
                cksum=cksum,
                options=[
                    MIP6OptMobNetPrefix(plen=56, prefix="2001:db8:100::"),
                    MIP6OptIPv4CoA(coa=COA4),
                    MIP6OptIPv4HoA(plen=32, hoa="192.0.2.77"),
                    MIP6OptReplayProtection(timestamp=TIMESTAMP),
                    MIP6OptMsgAuth(mspi=SPI, authdata=tag),
                ],
            )
        )

    packet, tag = sign(build, algorithm, mapped(COA4), HOA)
    return {
        "name": "bu-dsmip-nat-" + algorithm,
        "hex": packet.hex(),
        "auth": {"algorithm": algorithm, "key": KEY.hex(), "care_of": mapped(COA4),
                 "home": HOA},
        "expect": {
            "outer_source": NAT4,
            "outer_destination": HA4,
            "outer_sport": 40000,
            "outer_dport": DSMIP_PORT,
            "mh_type": 5,
            "sequence": 0x2345,
            "flags": "AHRF",
            "lifetime": 0x0040,
            "mnps": ["2001:db8:100::/56"],
            "ipv4_care_of": COA4,
            "ipv4_home_addresses": ["192.0.2.77/32"],
            "timestamp": TIMESTAMP,
            "spi": SPI,
            "auth_data": tag.hex(),
            "source": HOA,
            "destination": HA,
        },
    }


def ba_dsmip(algorithm):
    """The home agent's answer through the NAT (RFC 5555 §4.2): to the
    NAT's address and port, the IPv6 packet to the home address, NAT
    Detection and IPv4 Address Acknowledgement options."""
    def build(tag, cksum):
        return (
            IP(src=HA4, dst=NAT4)
            / UDP(sport=DSMIP_PORT, dport=40000)
            / IPv6(src=HA, dst=HOA)
            / MIP6MH_BA(
                status=0,
                flags="R",
                seq=0x2345,
                mhtime=0x0040,
                cksum=cksum,
                options=[
                    MIP6OptNATDetection(F=0, refresh=110),
                    MIP6OptIPv4AddrAck(status=0, plen=32, hoa="192.0.2.77"),
                    MIP6OptReplayProtection(timestamp=TIMESTAMP),
                    MIP6OptMsgAuth(mspi=SPI, authdata=tag),
                ],
            )
        )

    packet, tag = sign(build, algorithm, mapped(COA4), HOA)
    return {
        "name": "ba-dsmip-nat-" + algorithm,
        "hex": packet.hex(),
        "auth": {"algorithm": algorithm, "key": KEY.hex(), "care_of": mapped(COA4),
                 "home": HOA},
        "expect": {
            "outer_source": HA4,
            "outer_destination": NAT4,
            "outer_sport": DSMIP_PORT,
            "outer_dport": 40000,
            "mh_type": 6,
            "status": 0,
            "flags": "R",
            "sequence": 0x2345,
            "lifetime": 0x0040,
            "nat_udp_required": False,
            "nat_refresh": 110,
            "ipv4_ack_status": 0,
            "ipv4_ack_prefix_len": 32,
            "ipv4_ack_address": "192.0.2.77",
            "timestamp": TIMESTAMP,
            "spi": SPI,
            "auth_data": tag.hex(),
            "source": HA,
            "destination": HOA,
        },
    }


def simple(name, packet, expect):
    return {"name": name, "hex": bytes(packet).hex(), "expect": expect}


def authenticator_ok(raw, facts, option, key, care_of):
    """Checks nemo's RFC 4285 authenticator with Python's hmac module."""
    data = bytes(option.authdata)
    mh = bytearray(raw[mh_offset(raw):])
    marker = bytes([9, 5 + len(data), 1]) + option.mspi.to_bytes(4, "big") + data
    spi_end = mh.index(marker) + 7
    mh[4:6] = b"\0\0"
    if care_of is not None:  # a DSMIPv6 answer: the care-of address is not in it
        home = facts["destination"]
    elif "ipv4_care_of" in facts:  # a DSMIPv6 Binding Update, from the home address
        care_of, home = mapped(facts["ipv4_care_of"]), facts["source"]
    elif "home_address_option" in facts:  # a Binding Update
        care_of = facts.get("alternate_care_of", facts["source"])
        home = facts["home_address_option"]
    else:  # a Binding Acknowledgement to the care-of address
        care_of, home = facts["destination"], facts["type2_home_address"]
    covered = a16(care_of) + a16(home) + bytes(mh[:spi_end])
    digest = hashlib.sha1 if len(data) == 12 else hashlib.sha256
    return hmac.compare_digest(hmac.new(key, covered, digest).digest()[: len(data)], data)


def dissect_one(raw, key, care_of=None):
    """The facts Scapy reads from one packet built by nemo, and whether the
    Mobility Header checksum nemo wrote equals the one Scapy computes.
    `care_of` is the authenticated care-of address of a DSMIPv6 answer,
    which its packet does not carry."""
    facts = {}
    if raw[0] >> 4 == 4:
        outer = IP(raw)
        facts["outer_source"] = outer.src
        facts["outer_destination"] = outer.dst
        facts["outer_sport"] = outer[UDP].sport
        facts["outer_dport"] = outer[UDP].dport
        again = outer.copy()
        del again[UDP].chksum
        facts["udp_checksum_ok"] = IP(bytes(again))[UDP].chksum == outer[UDP].chksum
        raw = raw[ipv6_offset(raw):]
    packet = IPv6(raw)
    facts["source"] = packet.src
    facts["destination"] = packet.dst
    if IPv6ExtHdrDestOpt in packet:
        for option in packet[IPv6ExtHdrDestOpt].options:
            if isinstance(option, HAO):
                facts["home_address_option"] = option.hoa
    if IPv6ExtHdrRouting in packet:
        facts["type2_home_address"] = packet[IPv6ExtHdrRouting].addresses[0]
    mh = None
    for layer in (MIP6MH_BU, MIP6MH_BA, MIP6MH_BE, MIP6MH_BRR):
        if layer in packet:
            mh = packet[layer]
    if mh is None:
        facts["undissected"] = True
        return facts
    facts["mh_type"] = mh.mhtype
    # Scapy's own checksum routine picks the pseudo-header addresses from the
    # Home Address option and the type 2 routing header; it only sees a Home
    # Address option that is alone in its header, so drop the PadN that
    # parsing kept (it does not enter the checksum).
    if IPv6ExtHdrDestOpt in packet:
        header = packet[IPv6ExtHdrDestOpt]
        header.options = [o for o in header.options if isinstance(o, HAO)] or header.options
    zeroed = bytearray(raw[mh_offset(raw):])
    zeroed[4:6] = b"\0\0"
    facts["checksum_ok"] = in6_chksum(135, mh, bytes(zeroed)) == mh.cksum
    if isinstance(mh, (MIP6MH_BU, MIP6MH_BA)):
        facts["sequence"] = mh.seq
        facts["lifetime"] = mh.mhtime
        order = "AHLKMRP" if isinstance(mh, MIP6MH_BU) else "KR"
        facts["flags"] = "".join(f for f in order if f in str(mh.flags))
        if isinstance(mh, MIP6MH_BU) and mh.reserved & F_FLAG:
            facts["flags"] += "F"
    if isinstance(mh, (MIP6MH_BA, MIP6MH_BE)):
        facts["status"] = mh.status
    if isinstance(mh, MIP6MH_BE):
        facts["be_home_address"] = mh.ha
    for option in getattr(mh, "options", []):
        if isinstance(option, MIP6OptMobNetPrefix):
            facts.setdefault("mnps", []).append("%s/%d" % (option.prefix, option.plen))
        elif isinstance(option, MIP6OptMNID):
            facts["nai"] = option.id.decode()
        elif isinstance(option, MIP6OptReplayProtection):
            facts["timestamp"] = option.timestamp
        elif isinstance(option, MIP6OptMsgAuth):
            facts["spi"] = option.mspi
            facts["auth_data"] = bytes(option.authdata).hex()
            if key is not None:
                facts["auth_ok"] = authenticator_ok(raw, facts, option, key, care_of)
        elif isinstance(option, MIP6OptBRAdvice):
            facts["refresh_interval"] = option.rinter
        elif isinstance(option, MIP6OptAltCoA):
            facts["alternate_care_of"] = option.acoa
        elif isinstance(option, MIP6OptIPv4CoA):
            facts["ipv4_care_of"] = option.coa
        elif isinstance(option, MIP6OptIPv4HoA):
            facts.setdefault("ipv4_home_addresses", []).append(
                "%s/%d%s" % (option.hoa, option.plen, " P" if option.P else ""))
        elif isinstance(option, MIP6OptIPv4AddrAck):
            facts["ipv4_ack_status"] = option.status
            facts["ipv4_ack_prefix_len"] = option.plen
            facts["ipv4_ack_address"] = option.hoa
        elif isinstance(option, MIP6OptNATDetection):
            facts["nat_udp_required"] = bool(option.F)
            facts["nat_refresh"] = option.refresh
    return facts


def dissect(key):
    """Reads hex packets, one a line (a DSMIPv6 answer's care-of address
    after a space), and prints their facts as JSON."""
    lines = [line.split() for line in sys.stdin if line.strip()]
    json.dump([dissect_one(bytes.fromhex(words[0]), key, *words[1:]) for words in lines],
              sys.stdout, indent=1)


def main():
    if sys.argv[1:2] == ["dissect"]:
        dissect(bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else None)
        return
    cases = [bu_nemo("hmac-sha1-96"), bu_nemo("hmac-sha256"), ba_nemo("hmac-sha1-96"),
             ba_nemo("hmac-sha256"), bu_dsmip("hmac-sha1-96"), bu_dsmip("hmac-sha256"),
             ba_dsmip("hmac-sha256")]
    for status in (135, 140, 141, 142, 143, 144, 145, 146):
        cases.append(simple(
            "ba-status-%d" % status,
            IPv6(src=HA, dst=COA)
            / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOA])
            / MIP6MH_BA(status=status, flags="", seq=7, mhtime=0),
            {"mh_type": 6, "status": status, "flags": "", "sequence": 7, "lifetime": 0},
        ))
    cases.append(simple(
        "bu-all-flags-alt-coa-deregistration",
        IPv6(src=COA, dst=HA)
        / MIP6MH_BU(seq=65535, flags="AHLKMR", mhtime=0,
                    options=[MIP6OptAltCoA(acoa="2001:db8:3::30")]),
        {"mh_type": 5, "sequence": 65535, "flags": "AHLKMR", "lifetime": 0,
         "alternate_care_of": "2001:db8:3::30"},
    ))
    cases.append(simple(
        "bu-unknown-option-skipped",
        IPv6(src=COA, dst=HA)
        / MIP6MH_BU(seq=1, flags="AH", mhtime=10,
                    options=[MIP6OptUnknown(otype=200, odata=b"\x01\x02\x03"),
                             MIP6OptMobNetPrefix(plen=48, prefix="2001:db8:300::")]),
        {"mh_type": 5, "sequence": 1, "flags": "AH", "lifetime": 10,
         "mnps": ["2001:db8:300::/48"]},
    ))
    cases.append(simple(
        "binding-error-unrecognized-type",
        IPv6(src=HA, dst=COA) / MIP6MH_BE(status=2, ha=HOA),
        {"mh_type": 7, "status": 2, "be_home_address": HOA},
    ))
    cases.append(simple(
        "binding-refresh-request",
        IPv6(src=HA, dst=COA)
        / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOA])
        / MIP6MH_BRR(),
        {"mh_type": 0, "type2_home_address": HOA},
    ))
    cases.append(simple(
        "home-test-init-is-other",
        IPv6(src=COA, dst=HA) / MIP6MH_HoTI(cookie=bytes.fromhex("1122334455667788")),
        {"mh_type": 1, "other": True},
    ))
    cases.append(simple(
        "ba-dsmip-udp-forced-ipv4-refused",
        IP(src=HA4, dst=COA4)
        / UDP(sport=DSMIP_PORT, dport=DSMIP_PORT)
        / IPv6(src=HA, dst=HOA)
        / MIP6MH_BA(status=0, flags="R", seq=3, mhtime=2,
                    options=[MIP6OptIPv4AddrAck(status=132, plen=0, hoa="0.0.0.0"),
                             MIP6OptNATDetection(F=1, refresh=0xFFFFFFFF)]),
        {"outer_source": HA4, "outer_destination": COA4, "mh_type": 6, "status": 0,
         "ipv4_ack_status": 132, "ipv4_ack_prefix_len": 0, "ipv4_ack_address": "0.0.0.0",
         "nat_udp_required": True, "nat_refresh": 0xFFFFFFFF, "destination": HOA},
    ))
    cases.append(simple(
        "bu-ipv4-home-address-and-prefix-requests",
        IPv6(src=COA, dst=HA)
        / IPv6ExtHdrDestOpt(options=[HAO(hoa=HOA)])
        / MIP6MH_BU(seq=4, flags="AHR", mhtime=5,
                    options=[MIP6OptIPv4HoA(plen=32, hoa="0.0.0.0"),
                             MIP6OptIPv4HoA(plen=24, P=1, hoa="0.0.0.0")]),
        {"mh_type": 5, "flags": "AHR", "home_address_option": HOA,
         "ipv4_home_addresses": ["0.0.0.0/32", "0.0.0.0/24 P"]},
    ))
    json.dump(cases, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
