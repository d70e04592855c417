//! Attaching the programs: a route whose lightweight tunnel is a BPF
//! program (`encap bpf xmit`), built as a netlink message, and the tc
//! ingress hook of the uplink (libbpf's netlink, clsact, direct action).

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use ipnet::Ipv6Net;
use libbpf_rs::{TcHookBuilder, TC_EGRESS, TC_INGRESS};
use netlink_packet_core::DefaultNla;
use netlink_packet_route::route::{
    RouteAttribute, RouteLwEnCapType, RouteLwTunnelEncap, RouteMessage, RouteProtocol,
};
use rtnetlink::RouteMessageBuilder;

use super::{unavailable, Program};
use crate::linux::PROTOCOL;
use crate::DataPlaneError;

/// Octets IPv6-in-IPv6 adds (RFC 2473 §4.1 without options): the route's
/// headroom, which the kernel takes off the path MTU it checks, so a
/// packet too big for the tunnel gets a Packet Too Big before the program.
pub const HEADROOM: u32 = 40;

// include/uapi/linux/lwtunnel.h
const LWT_BPF_XMIT: u16 = 3;
const LWT_BPF_XMIT_HEADROOM: u16 = 4;
const LWT_BPF_PROG_FD: u16 = 1;
const LWT_BPF_PROG_NAME: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

/// The priority and handle of nemo's tc filters on the uplink (one at
/// ingress, one at egress; a restart replaces each in place).
const TC_PRIORITY: u32 = 4191;
const TC_HANDLE: u32 = 4191;

/// One netlink attribute: length, type, value, padded to 4 octets.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let length = 4 + value.len();
    let mut out = Vec::with_capacity(length.next_multiple_of(4));
    out.extend_from_slice(&(length as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(length.next_multiple_of(4), 0);
    out
}

/// `destination encap bpf xmit fd FD name NAME headroom 40 dev INTERFACE
/// table TABLE proto 78`.
pub fn encap_route(
    destination: Ipv6Net,
    interface: u32,
    table: u32,
    program: Program,
    fd: BorrowedFd<'_>,
) -> RouteMessage {
    let mut message = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .output_interface(interface)
        .table_id(table)
        .protocol(RouteProtocol::Other(PROTOCOL))
        .build();
    let mut name = program.name().as_bytes().to_vec();
    name.push(0);
    let mut xmit = attribute(LWT_BPF_PROG_FD, &(fd.as_raw_fd() as u32).to_ne_bytes());
    xmit.extend(attribute(LWT_BPF_PROG_NAME, &name));
    message
        .attributes
        .push(RouteAttribute::EncapType(RouteLwEnCapType::Bpf));
    message.attributes.push(RouteAttribute::Encap(vec![
        RouteLwTunnelEncap::Other(DefaultNla::new(LWT_BPF_XMIT | NLA_F_NESTED, xmit)),
        RouteLwTunnelEncap::Other(DefaultNla::new(
            LWT_BPF_XMIT_HEADROOM,
            HEADROOM.to_ne_bytes().to_vec(),
        )),
    ]));
    message
}

/// True when a listed route's tunnel is a BPF program (ours, given the
/// table and protocol).
pub fn is_bpf_route(message: &RouteMessage) -> bool {
    message
        .attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::EncapType(RouteLwEnCapType::Bpf)))
}

/// Where on an interface a tc program runs, and what it is (for errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcHook {
    /// Ingress: the decapsulation program.
    Decap,
    /// Egress: the home agent's copies to a moving tenant's second peer.
    Bicast,
    /// Ingress of a held tenant's port: its VM's first frame releases it.
    Release,
    /// Egress of the translator's device: what is routed there is
    /// translated (RFC 7915) and comes back in at its ingress.
    Translate,
    /// Ingress of an interface packets to be translated arrive on: the
    /// common case translated there, after the decapsulation program
    /// (a filter of its own, run after it).
    TranslateAtArrival,
}

impl TcHook {
    fn builder<'a>(self, interface: u32, fd: BorrowedFd<'a>) -> libbpf_rs::TcHook {
        let mut builder = TcHookBuilder::new(fd);
        builder
            .ifindex(interface as i32)
            .replace(true)
            .handle(TC_HANDLE)
            .priority(match self {
                TcHook::TranslateAtArrival => TC_PRIORITY + 1,
                _ => TC_PRIORITY,
            });
        builder.hook(match self {
            TcHook::Decap | TcHook::Release | TcHook::TranslateAtArrival => TC_INGRESS,
            TcHook::Bicast | TcHook::Translate => TC_EGRESS,
        })
    }

    fn what(self) -> &'static str {
        match self {
            TcHook::Decap => "the decapsulation program at tc ingress",
            TcHook::Bicast => "the copying program at tc egress",
            TcHook::Release => "the release program at tc ingress of a tenant's port",
            TcHook::Translate => "the translator at tc egress of its device",
            TcHook::TranslateAtArrival => "the translator at tc ingress (at arrival)",
        }
    }
}

/// Attaches (or replaces in place) a program at the interface's tc hook,
/// creating the clsact qdisc if needed.
pub fn attach_tc(hook: TcHook, interface: u32, fd: BorrowedFd<'_>) -> Result<(), DataPlaneError> {
    let mut tc = hook.builder(interface, fd);
    // EEXIST: the qdisc is there already (an earlier run, another filter).
    if let Err(error) = tc.create() {
        if !error.to_string().contains("exists") {
            return Err(unavailable(format!(
                "creating the clsact qdisc on interface {interface}: {error}"
            )));
        }
    }
    tc.attach().map(drop).map_err(|e| {
        unavailable(format!(
            "attaching {} of interface {interface}: {e}",
            hook.what()
        ))
    })
}

/// Removes nemo's filter from the interface's tc hook (the qdisc stays:
/// other filters may use it).
pub fn detach_tc(hook: TcHook, interface: u32, fd: BorrowedFd<'_>) -> Result<(), DataPlaneError> {
    match hook.builder(interface, fd).detach() {
        Ok(()) => Ok(()),
        Err(error) if error.to_string().contains("No such file") => Ok(()),
        Err(error) => Err(unavailable(format!(
            "detaching {} from interface {interface}: {error}",
            hook.what()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_octets() {
        assert_eq!(
            attribute(2, b"abc\0"),
            vec![8, 0, 2, 0, b'a', b'b', b'c', 0]
        );
        assert_eq!(attribute(1, &[7]), vec![5, 0, 1, 0, 7, 0, 0, 0]);
    }
}
