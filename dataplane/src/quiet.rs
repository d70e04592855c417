//! Keeping the kernel quiet about Home Address options.
//!
//! Kernels without Mobile IPv6 (this one) answer a Binding Update that
//! carries a Home Address destination option with an ICMPv6 Parameter
//! Problem and drop it (GUIDE.md, measured). The home agent reads Binding
//! Updates from a packet socket, which sees them before the kernel's IPv6
//! input does; this module stops the kernel's own processing (and so its
//! error) with a tc ingress filter, programmed over rtnetlink. The kernels
//! this runs on have cls_bpf but no gact ("action drop"), so the filter is a
//! classic BPF program in direct-action mode, which returns TC_ACT_SHOT
//! itself; no eBPF loading is needed:
//!
//! ```text
//! tc qdisc add dev IF ingress
//! tc filter add dev IF ingress protocol ipv6 pref 20045 bpf da bytecode ...
//!     ldh [12]  == 0x86dd   (IPv6)
//!     ldb [20]  == 60       (next header: Destination Options)
//!     ldb [54]  == 135      (... then the Mobility Header)
//!     ld [38..54] == HA     (sent to the home agent's address)
//!     ret TC_ACT_SHOT, else ret TC_ACT_UNSPEC
//! ```
//!
//! Packet taps (AF_PACKET sockets for all protocols) run before tc ingress
//! in the receive path, so the home agent still sees the packet. Only
//! Mobility Header packets with a Destination Options header sent to the
//! home agent's own addresses are dropped; everything else passes.
//! Everything is marked by its preference, so that start-up removes leftovers
//! and shutdown removes what was added.

use std::net::Ipv6Addr;

use futures::StreamExt;
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::Handle;

use crate::DataPlaneError;

/// The tc filter preference that marks nemo's filters ("NM").
pub const FILTER_PREFERENCE: u16 = 0x4e4d;
const ETH_P_IPV6: u16 = 0x86dd;
const NEXT_HEADER_DSTOPTS: u32 = 60;
const NEXT_HEADER_MH: u32 = 135;
const NEXT_HEADER_ROUTING: u32 = 43;
const ROUTING_TYPE_2: u32 = 2;

fn refused(action: &'static str, reason: impl ToString) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "tc ingress filter",
        reason: format!("{action}: {}", reason.to_string()),
    }
}

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// tc verdicts a direct-action program returns.
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_UNSPEC: u32 = u32::MAX;
/// Netlink attributes of cls_bpf for a classic program.
const TCA_BPF_OPS_LEN: u16 = 4;
const TCA_BPF_OPS: u16 = 5;

/// One classic BPF instruction (struct sock_filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// Which mobility signalling a host takes off the wire before its kernel
/// sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalling {
    /// A home agent: Binding Updates, a Destination Options header (the
    /// Home Address option) followed by the Mobility Header.
    BindingUpdates,
    /// A mobile router: Binding Acknowledgements, a type 2 routing header
    /// followed by the Mobility Header (RFC 6275 §6.4).
    BindingAcks,
}

impl Signalling {
    /// The (offset from the IPv6 header, value) octets that identify it.
    fn octets(self) -> [(u32, u32); 3] {
        match self {
            // Next Header 60; the options header's Next Header 135; octet
            // 40 once more (a placeholder that always matches).
            Signalling::BindingUpdates => [
                (6, NEXT_HEADER_DSTOPTS),
                (40, NEXT_HEADER_MH),
                (40, NEXT_HEADER_MH),
            ],
            // Next Header 43; the routing header's Next Header 135 and its
            // Routing Type 2.
            Signalling::BindingAcks => [
                (6, NEXT_HEADER_ROUTING),
                (40, NEXT_HEADER_MH),
                (42, ROUTING_TYPE_2),
            ],
        }
    }
}

/// The program that returns TC_ACT_SHOT for mobility signalling of `kind`
/// sent to `address`, seen from the Ethernet header (cls_bpf pushes the
/// link header back at ingress), and TC_ACT_UNSPEC for anything else.
pub fn program(address: Ipv6Addr, kind: Signalling) -> Vec<Instruction> {
    let octets = address.octets();
    let word =
        |i: usize| u32::from_be_bytes([octets[i], octets[i + 1], octets[i + 2], octets[i + 3]]);
    // (load, offset, expected value): each failed comparison jumps to the
    // final "pass" instruction.
    let [first, second, third] = kind.octets();
    let checks = [
        (BPF_LD_H_ABS, 12, u32::from(ETH_P_IPV6)),
        (BPF_LD_B_ABS, 14 + first.0, first.1),
        (BPF_LD_B_ABS, 14 + second.0, second.1),
        (BPF_LD_B_ABS, 14 + third.0, third.1),
        (BPF_LD_W_ABS, 14 + 24, word(0)),
        (BPF_LD_W_ABS, 14 + 28, word(4)),
        (BPF_LD_W_ABS, 14 + 32, word(8)),
        (BPF_LD_W_ABS, 14 + 36, word(12)),
    ];
    let total = checks.len() * 2 + 2;
    let pass = total - 1;
    let mut program = Vec::with_capacity(total);
    for (load, offset, value) in checks {
        program.push(Instruction {
            code: load,
            jt: 0,
            jf: 0,
            k: offset,
        });
        let here = program.len();
        program.push(Instruction {
            code: BPF_JEQ_K,
            jt: 0,
            // At most 18 instructions: always fits.
            jf: (pass - here - 1) as u8,
            k: value,
        });
    }
    program.push(Instruction {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: TC_ACT_SHOT,
    });
    program.push(Instruction {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: TC_ACT_UNSPEC,
    });
    program
}

/// The program as struct sock_filter bytes (host byte order).
fn program_bytes(program: &[Instruction]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

/// Removes nemo's filters from the interface's ingress (all protocols at
/// nemo's preference). Missing qdisc or filters are not an error.
async fn remove_filters(handle: &Handle, index: u32) -> Result<(), DataPlaneError> {
    let mut message = TcMessage::with_index(index as i32);
    message.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    message.header.info = u32::from(TcHandle {
        major: FILTER_PREFERENCE,
        minor: ETH_P_IPV6.to_be(),
    });
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::DelTrafficFilter(message));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut handle = handle.clone();
    let mut responses = handle
        .request(request)
        .map_err(|e| refused("removing filters", e))?;
    while let Some(response) = responses.next().await {
        if let NetlinkPayload::Error(error) = response.payload {
            // ENOENT / EINVAL: nothing of ours there.
            let code = error.code.map(|c| -c.get()).unwrap_or(0);
            if code != 0 && code != 2 && code != 22 {
                return Err(refused("removing filters", error));
            }
        }
    }
    Ok(())
}

async fn add_filter(
    handle: &Handle,
    index: u32,
    address: Ipv6Addr,
    kind: Signalling,
) -> Result<(), String> {
    let program = program(address, kind);
    let mut message = TcMessage::with_index(index as i32);
    message.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    message.header.info = u32::from(TcHandle {
        major: FILTER_PREFERENCE,
        minor: ETH_P_IPV6.to_be(),
    });
    message.attributes = vec![
        TcAttribute::Kind(TcFilterBpf::KIND.into()),
        TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
                TCA_BPF_OPS_LEN,
                (program.len() as u16).to_ne_bytes().to_vec(),
            ))),
            TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
                TCA_BPF_OPS,
                program_bytes(&program),
            ))),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]),
    ];
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewTrafficFilter(message));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut handle = handle.clone();
    let mut responses = handle.request(request).map_err(|e| e.to_string())?;
    while let Some(response) = responses.next().await {
        if let NetlinkPayload::Error(error) = response.payload {
            if error.code.is_some() {
                return Err(error.to_string());
            }
        }
    }
    Ok(())
}

/// What [`suppress`] installed, to remove at shutdown.
#[derive(Debug)]
pub struct Suppression {
    handle: Handle,
    interfaces: Vec<u32>,
}

impl Suppression {
    /// Removes the filters.
    pub async fn remove(self) -> Result<(), DataPlaneError> {
        for index in self.interfaces {
            remove_filters(&self.handle, index).await?;
        }
        Ok(())
    }
}

/// Installs the filters on every interface for every home-agent address,
/// replacing nemo's leftovers.
pub async fn suppress(
    handle: &Handle,
    interfaces: &[String],
    addresses: &[Ipv6Addr],
    kind: Signalling,
) -> Result<Suppression, DataPlaneError> {
    let mut installed = Vec::new();
    for name in interfaces {
        let index = crate::addresses::interface_index(handle, name).await?;
        remove_filters(handle, index).await?;
        // An ingress qdisc; one that exists already is fine.
        if let Err(error) = handle.qdisc().add(index as i32).ingress().execute().await {
            if !error.to_string().contains("File exists") && !error.to_string().contains("17") {
                return Err(refused("adding ingress qdisc", format!("{name}: {error}")));
            }
        }
        for address in addresses {
            add_filter(handle, index, *address, kind)
                .await
                .map_err(|e| refused("adding filter", format!("{name} {address}: {e}")))?;
        }
        tracing::info!(interface = %name, ?addresses, ?kind, "kernel Parameter Problems for mobility signalling suppressed");
        installed.push(index);
    }
    Ok(Suppression {
        handle: handle.clone(),
        interfaces: installed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program of the shape `program` builds (loads,
    /// equality jumps, returns) over a frame, as the kernel would.
    fn run(program: &[Instruction], frame: &[u8]) -> u32 {
        let mut accumulator = 0u32;
        let mut pc = 0;
        loop {
            let i = program[pc];
            let k = i.k as usize;
            match i.code {
                BPF_LD_W_ABS => {
                    let Some(b) = frame.get(k..k + 4) else {
                        return 0;
                    };
                    accumulator = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                }
                BPF_LD_H_ABS => {
                    let Some(b) = frame.get(k..k + 2) else {
                        return 0;
                    };
                    accumulator = u32::from(u16::from_be_bytes([b[0], b[1]]));
                }
                BPF_LD_B_ABS => {
                    let Some(b) = frame.get(k) else { return 0 };
                    accumulator = u32::from(*b);
                }
                BPF_JEQ_K => {
                    pc += usize::from(if accumulator == i.k { i.jt } else { i.jf });
                }
                BPF_RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    fn frame(next: u8, after: u8, destination: Ipv6Addr) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 40 + 8];
        frame[12..14].copy_from_slice(&[0x86, 0xdd]);
        frame[14] = 0x60;
        frame[14 + 6] = next;
        frame[14 + 24..14 + 40].copy_from_slice(&destination.octets());
        frame[14 + 40] = after;
        frame
    }

    #[test]
    fn program_drops_only_mobility_headers_with_destination_options_to_us() {
        let ha: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let program = program(ha, Signalling::BindingUpdates);
        assert_eq!(program.len(), 18);
        assert_eq!(run(&program, &frame(60, 135, ha)), TC_ACT_SHOT);
        // Anything else passes.
        assert_eq!(run(&program, &frame(60, 6, ha)), TC_ACT_UNSPEC);
        assert_eq!(run(&program, &frame(135, 59, ha)), TC_ACT_UNSPEC);
        assert_eq!(run(&program, &frame(6, 0, ha)), TC_ACT_UNSPEC);
        let other: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        assert_eq!(run(&program, &frame(60, 135, other)), TC_ACT_UNSPEC);
        let mut ipv4 = frame(60, 135, ha);
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run(&program, &ipv4), TC_ACT_UNSPEC);
    }

    #[test]
    fn program_drops_only_acknowledgements_with_a_type_2_routing_header_to_us() {
        let care_of: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        let program = program(care_of, Signalling::BindingAcks);
        let mut ack = frame(43, 135, care_of);
        ack[14 + 42] = 2;
        assert_eq!(run(&program, &ack), TC_ACT_SHOT);
        // A routing header of another type, or another payload, passes.
        let mut segment_routing = ack.clone();
        segment_routing[14 + 42] = 4;
        assert_eq!(run(&program, &segment_routing), TC_ACT_UNSPEC);
        let mut tcp = ack.clone();
        tcp[14 + 40] = 6;
        assert_eq!(run(&program, &tcp), TC_ACT_UNSPEC);
        assert_eq!(run(&program, &frame(60, 135, care_of)), TC_ACT_UNSPEC);
    }
}
