#!/usr/bin/python3
"""A mobile router played by Scapy, for the native-transport test of nemo-ha.

Sends one RFC 6275 Binding Update (from the care-of address, Home Address
option, Mobile Network Prefix, NAI, RFC 4285 timestamp and HMAC-SHA256
authentication computed with Python's hmac) and sniffs the answer on the
interface: the Binding Acknowledgement with its type 2 routing header, and
any ICMPv6 Parameter Problem the home agent's kernel sends.

usage: mr_scapy.py IFACE COA HA HOA SPI KEYHEX MNP SEQ PCAP
Prints JSON: {"ba_hex": ..., "param_problem": bool}.
"""

import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "nemo", "tests", "xcheck"))

from scapy.all import AsyncSniffer, send, wrpcap  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    HAO,
    ICMPv6ParamProblem,
    IPv6,
    IPv6ExtHdrDestOpt,
    MIP6MH_BA,
    MIP6MH_BU,
    MIP6OptMNID,
    MIP6OptMobNetPrefix,
    MIP6OptMsgAuth,
    MIP6OptReplayProtection,
)

from scapy_cases import sign  # noqa: E402

NTP_OFFSET = 2208988800


def main():
    iface, coa, ha, hoa, spi, key, mnp, seq, pcap = sys.argv[1:10]
    spi, key, seq = int(spi), bytes.fromhex(key), int(seq)
    prefix, plen = mnp.split("/")
    now = time.time()
    timestamp = (int(now) + NTP_OFFSET) << 32 | int((now % 1) * (1 << 32))

    def build(tag, cksum):
        return (
            IPv6(src=coa, dst=ha)
            / IPv6ExtHdrDestOpt(options=[HAO(hoa=hoa)])
            / MIP6MH_BU(
                seq=seq,
                flags="AHR",
                mhtime=100,
                cksum=cksum,
                options=[
                    MIP6OptMobNetPrefix(plen=int(plen), prefix=prefix),
                    MIP6OptMNID(id=b"scapy-mr@nemo.example"),
                    MIP6OptReplayProtection(timestamp=timestamp),
                    MIP6OptMsgAuth(mspi=spi, authdata=tag),
                ],
            )
        )

    packet, _ = sign(build, "hmac-sha256", coa, hoa, key=key, spi=spi)
    sniffer = AsyncSniffer(
        iface=iface,
        lfilter=lambda p: IPv6 in p and p[IPv6].dst == coa
        and (MIP6MH_BA in p or ICMPv6ParamProblem in p),
    )
    sniffer.start()
    time.sleep(0.5)
    send(IPv6(packet), iface=iface, verbose=False)
    deadline = time.time() + 5
    while time.time() < deadline and not any(MIP6MH_BA in p for p in sniffer.results or []):
        time.sleep(0.05)
    time.sleep(0.5)  # a Parameter Problem may trail the acknowledgement
    captured = sniffer.stop()
    acks = [p for p in captured if MIP6MH_BA in p]
    if acks:
        wrpcap(pcap, [acks[0][IPv6]])
    json.dump(
        {
            "ba_hex": bytes(acks[0][IPv6]).hex() if acks else None,
            "param_problem": any(ICMPv6ParamProblem in p for p in captured),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
