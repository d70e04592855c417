//! `nemo-ha` with `[ipv4]` (Dual-Stack Mobile IPv6, RFC 5555) and the BPF
//! data plane, in network namespaces: a mobile router behind a NAT
//! (nftables masquerade that changes the source port) registers its IPv4
//! care-of address in UDP over IPv4 (nemo's registrar on a real socket);
//! the home agent detects the NAT, answers through it, and tunnels the
//! tenant's packets IPv6-in-UDP to the NAT's mapping, and takes the reverse
//! tunnel only from that mapping.
//!
//! Needs root, iproute2, nft and a kernel running the BPF data plane:
//! skips loudly without them unless NEMO_REQUIRE_NETNS is set (CI sets it).
//! Only 2001:db8::/32 and 192.0.2.0/24 (the WAN 192.0.2.0/25, the NAT's
//! inside 192.0.2.128/25).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::registration::{Encapsulation, Event, InstanceConfig, Registrar};
use nemo::wire::{upper_layer_checksum, SequenceNumber};
use nemo_testkit::{addr, net, netns_available, require, runs, veth, BpfFs, Netns};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const MNP: &str = "2001:db8:100::/56";
const VM: &str = "2001:db8:100::2";
const CN: &str = "2001:db8:f::2";
const SPI: u32 = 0x1000;
const KEY: &str = "6e656d6f2d64736d69702d746573742d6b65792d3332206f6374657473212e21";
/// The home agent's IPv4 address and port, the mobile router's private
/// care-of address and port (the NAT's outside address is 192.0.2.99).
const HA4: &str = "192.0.2.1:4191";
const MR4: &str = "192.0.2.130:4191";

/// Kills the daemon when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn sa() -> SecurityAssociation {
    SecurityAssociation::new(SPI, Algorithm::HmacSha256, unhex(KEY)).unwrap()
}

/// An IPv6 UDP packet from `source` to `destination`, port 9, checksum
/// filled in (the receiving kernel checks it).
fn udp_packet(source: Ipv6Addr, destination: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x23, 0x28, 0, 9];
    udp.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let checksum = upper_layer_checksum(source, destination, 17, &udp, 6);
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[17, 64]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(&udp);
    packet
}

/// The namespaces: correspondent, home agent, NAT, mobile router.
struct Sites {
    cn: Netns,
    ha: Netns,
    _nat: Netns,
    mr: Netns,
}

fn sites() -> Sites {
    let cn = Netns::new("dsmipha-cn");
    let ha = Netns::new("dsmipha-ha");
    let nat = Netns::new("dsmipha-nat");
    let mr = Netns::new("dsmipha-mr");
    veth(
        &cn,
        "c0",
        &format!("{CN}/64"),
        &ha,
        "h0",
        "2001:db8:f::1/64",
    );
    cn.ip(&["-6", "route", "add", "default", "via", "2001:db8:f::1"]);
    nemo_testkit::link(&ha, "h1", &nat, "o0");
    ha.ip(&["addr", "add", "192.0.2.1/25", "dev", "h1"]);
    ha.ip(&["addr", "add", &format!("{HA}/64"), "dev", "h1", "nodad"]);
    nat.ip(&["addr", "add", "192.0.2.99/25", "dev", "o0"]);
    nemo_testkit::link(&nat, "i0", &mr, "u0");
    nat.ip(&["addr", "add", "192.0.2.129/25", "dev", "i0"]);
    mr.ip(&["addr", "add", "192.0.2.130/25", "dev", "u0"]);
    mr.ip(&["route", "add", "default", "via", "192.0.2.129"]);
    nemo_testkit::masquerade(&nat, "o0");
    for (site, sysctl) in [
        (&ha, "net.ipv6.conf.all.forwarding=1"),
        (&nat, "net.ipv4.ip_forward=1"),
    ] {
        site.command("sysctl")
            .args(["-qw", sysctl])
            .status()
            .unwrap();
    }
    Sites {
        cn,
        ha,
        _nat: nat,
        mr,
    }
}

fn start_home_agent(ha: &Netns, dir: &std::path::Path, bpffs: &BpfFs) -> Killed {
    let config = dir.join("ha.toml");
    std::fs::write(
        &config,
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n\
             [store]\npath = \"{}\"\n\n\
             [udp]\nlisten = [\"{HA4}\"]\n\n\
             [dataplane]\nbackend = \"bpf\"\nuplink = \"h1\"\nlocal_address = \"{HA}\"\n\
             pin_dir = \"{}\"\naggregates = [\"2001:db8:100::/40\"]\n\n\
             [ipv4]\naddress = \"192.0.2.1\"\nnat_keepalive_secs = 20\n\n\
             [[mobile_router]]\nhome_address = \"{HOA}\"\nspi = {SPI}\nkey = \"{KEY}\"\n\
             prefixes = [\"{MNP}\"]\n",
            dir.join("store").display(),
            bpffs.path("ha").display()
        ),
    )
    .unwrap();
    let mut child = ha
        .command(env!("CARGO_BIN_EXE_nemo-ha"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let daemon = Killed(child);
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready).unwrap();
    assert!(ready.starts_with("nemo-ha ready"), "{ready:?}");
    daemon
}

/// What the mobile router saw: its registration's encapsulation, and the
/// tunnelled packet from the correspondent.
struct Registered {
    encapsulation: Encapsulation,
    socket: UdpSocket,
}

/// Registers from behind the NAT with nemo's registrar on a real socket.
fn register(mr: &Netns) -> Registered {
    mr.spawn_in(|| {
        let socket = UdpSocket::bind(MR4).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut registrar = Registrar::new(
            InstanceConfig {
                home_address: addr(HOA),
                home_agent: addr(HA),
                prefixes: vec![net(MNP)],
                lifetime: Duration::from_secs(300),
                sa: sa(),
                nai: None,
            },
            SequenceNumber(1),
        );
        let care_of: std::net::SocketAddrV4 = MR4.parse().unwrap();
        registrar.set_care_of(
            Some(IpAddr::V4(*care_of.ip())),
            Instant::now(),
            SystemTime::now(),
        );
        let update = registrar.poll_transmit().unwrap();
        socket.send_to(&update, HA4).unwrap();
        let mut buffer = [0u8; 2048];
        let (len, from) = socket.recv_from(&mut buffer).expect("no acknowledgement");
        assert_eq!(from, HA4.parse::<SocketAddr>().unwrap());
        registrar
            .handle_ack(&buffer[..len], Instant::now(), SystemTime::now())
            .unwrap();
        let events: Vec<Event> = std::iter::from_fn(|| registrar.poll_event()).collect();
        let [Event::Registered { encapsulation, .. }] = events.as_slice() else {
            panic!("{events:?}");
        };
        Registered {
            encapsulation: *encapsulation,
            socket,
        }
    })
    .join()
    .unwrap()
}

#[test]
fn a_mobile_router_behind_a_nat_registers_and_its_tenant_is_tunnelled_in_udp() {
    if !netns_available(MUST_RUN)
        || !require(
            runs("nft", &["--version"]),
            "nft missing (nftables)",
            MUST_RUN,
        )
        || !nemo_testkit::require_backend(
            nemo_dataplane::KernelBackend::Bpf.probe(),
            nemo_dataplane::KernelBackend::Seg6.probe(),
            "nemo-ha over IPv4 and through a NAT",
            "NEMO_REQUIRE_DATAPLANE",
        )
    {
        return;
    }
    let bpffs = BpfFs::mount();
    let sites = sites();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = start_home_agent(&sites.ha, dir.path(), &bpffs);

    // The BU went through the NAT, so the home agent saw a NAT: UDP, and
    // the keepalive it is configured with (RFC 5555 §4.2, §4.3).
    let Registered {
        encapsulation,
        socket,
    } = register(&sites.mr);
    assert_eq!(
        encapsulation,
        Encapsulation::Udp {
            keepalive: Some(Duration::from_secs(20))
        }
    );

    // Correspondent -> VM: tunnelled in UDP to the NAT's mapping, which
    // brings it to the mobile router's port.
    let cn_socket = sites
        .cn
        .spawn_in(|| {
            let socket = UdpSocket::bind(format!("[{CN}]:9")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            socket
        })
        .join()
        .unwrap();
    cn_socket
        .send_to(b"to the vm", format!("[{VM}]:9"))
        .unwrap();
    let mut buffer = [0u8; 2048];
    let (len, from) = socket.recv_from(&mut buffer).expect("nothing tunnelled");
    assert_eq!(from, HA4.parse::<SocketAddr>().unwrap());
    let inner = &buffer[..len];
    assert_eq!(inner[0] >> 4, 6, "not IPv6 inside");
    assert_eq!(&inner[8..24], &addr(CN).octets());
    assert_eq!(&inner[24..40], &addr(VM).octets());
    assert!(inner.ends_with(b"to the vm"));

    // VM -> correspondent through the reverse tunnel, from the mapping.
    let reply = udp_packet(addr(VM), addr(CN), b"from the vm");
    socket.send_to(&reply, HA4).unwrap();
    let (len, from) = cn_socket.recv_from(&mut buffer).expect("reverse tunnel");
    assert_eq!(&buffer[..len], b"from the vm");
    assert_eq!(from.ip(), IpAddr::V6(addr(VM)));

    // The same from another port (another mapping of the NAT): refused.
    let other = sites
        .mr
        .spawn_in(|| UdpSocket::bind("192.0.2.130:4192").unwrap())
        .join()
        .unwrap();
    other.send_to(&reply, HA4).unwrap();
    assert!(
        cn_socket.recv_from(&mut buffer).is_err(),
        "taken from another mapping"
    );
}
