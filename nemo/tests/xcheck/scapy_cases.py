#!/usr/bin/python3
"""Mobility Header test cases built by Scapy, an implementation nemo did not write.

Prints a JSON list on stdout. Each case holds a whole IPv6 packet (hex) as
Scapy builds it, with Scapy's own padding, alignment and checksum (Scapy picks
the pseudo-header addresses from the Home Address option and the type 2
routing header itself), and the facts nemo must decode from it. Where a case
is authenticated, the RFC 4285 authenticator is computed here with Python's
hmac module, independently of nemo's code.

Run by nemo/tests/xcheck.rs with /usr/bin/python3 (Debian's python3-scapy).
"""

import hashlib
import hmac
import json
import socket
import sys
import warnings

warnings.filterwarnings("ignore")

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
    in6_chksum,
)

HA = "2001:db8:1::1"
HOA = "2001:db8:1::100"
COA = "2001:db8:2::10"
KEY = bytes(range(1, 21))
SPI = 0x1000
TIMESTAMP = 0xE9A1B2C3_12345678
PLACEHOLDER = 0xAA


def a16(addr):
    return socket.inet_pton(socket.AF_INET6, addr)


def mh_offset(raw):
    """Offset of the Mobility Header in an IPv6 packet, walking headers."""
    nh, off = raw[6], 40
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


def simple(name, packet, expect):
    return {"name": name, "hex": bytes(packet).hex(), "expect": expect}


def authenticator_ok(raw, facts, option, key):
    """Checks nemo's RFC 4285 authenticator with Python's hmac module."""
    data = bytes(option.authdata)
    mh = bytearray(raw[mh_offset(raw):])
    marker = bytes([9, 5 + len(data), 1]) + option.mspi.to_bytes(4, "big") + data
    spi_end = mh.index(marker) + 7
    mh[4:6] = b"\0\0"
    if "home_address_option" in facts:  # a Binding Update
        care_of = facts.get("alternate_care_of", facts["source"])
        home = facts["home_address_option"]
    else:  # a Binding Acknowledgement to the care-of address
        care_of, home = facts["destination"], facts["type2_home_address"]
    covered = a16(care_of) + a16(home) + bytes(mh[:spi_end])
    digest = hashlib.sha1 if len(data) == 12 else hashlib.sha256
    return hmac.compare_digest(hmac.new(key, covered, digest).digest()[: len(data)], data)


def dissect_one(raw, key):
    """The facts Scapy reads from one packet built by nemo, and whether the
    Mobility Header checksum nemo wrote equals the one Scapy computes."""
    packet = IPv6(raw)
    facts = {"source": packet.src, "destination": packet.dst}
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
        order = "AHLKMR" if isinstance(mh, MIP6MH_BU) else "KR"
        facts["flags"] = "".join(f for f in order if f in str(mh.flags))
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
                facts["auth_ok"] = authenticator_ok(raw, facts, option, key)
        elif isinstance(option, MIP6OptBRAdvice):
            facts["refresh_interval"] = option.rinter
        elif isinstance(option, MIP6OptAltCoA):
            facts["alternate_care_of"] = option.acoa
    return facts


def dissect(key):
    """Reads hex packets, one a line, and prints their facts as JSON."""
    packets = [bytes.fromhex(line.strip()) for line in sys.stdin if line.strip()]
    json.dump([dissect_one(raw, key) for raw in packets], sys.stdout, indent=1)


def main():
    if sys.argv[1:2] == ["dissect"]:
        dissect(bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else None)
        return
    cases = [bu_nemo("hmac-sha1-96"), bu_nemo("hmac-sha256"), ba_nemo("hmac-sha1-96"),
             ba_nemo("hmac-sha256")]
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
    json.dump(cases, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
