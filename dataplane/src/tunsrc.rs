//! The seg6 tunnel source address (`ip sr tunsrc`), over the kernel's SEG6
//! generic netlink family.
//!
//! Without it the kernel picks the outer source of every seg6
//! encapsulation by source-address selection towards the far end; with a
//! second global address on the uplink it may pick that one, and the far
//! end's decapsulation route (`<its address> from <our tunnel address>`)
//! never matches: every tenant packet is dropped. Pinning it to the
//! configured tunnel address makes the outer source what the peer expects.
//! It is one setting per network namespace (`seg6_pernet_data.tun_src`), so
//! a host runs one nemo daemon per namespace.
//!
//! The messages (include/uapi/linux/genetlink.h, seg6_genl.h):
//! ```text
//! nlmsghdr { len: u32, type: u16, flags: u16, seq: u32, pid: u32 }
//! genlmsghdr { cmd: u8, version: u8, reserved: u16 }
//! nlattr { len: u16, type: u16 } value, padded to 4 octets
//! ```
//! The family's number is asked of the controller family (GENL_ID_CTRL,
//! CTRL_CMD_GETFAMILY with CTRL_ATTR_FAMILY_NAME "SEG6").

use std::net::Ipv6Addr;

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const SEG6_CMD_SET_TUNSRC: u8 = 3;
const SEG6_CMD_GET_TUNSRC: u8 = 4;
const SEG6_ATTR_DST: u16 = 1;
const SEG6_GENL_VERSION: u8 = 1;
const NLMSG_HEADER: usize = 16;
const GENL_HEADER: usize = 4;

/// Why the tunnel source could not be read or set.
#[derive(Debug, thiserror::Error)]
pub enum TunsrcError {
    /// The socket failed.
    #[error("generic netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused (errno).
    #[error("the kernel refused {what}: {error}")]
    Refused {
        /// The request.
        what: &'static str,
        /// Its answer.
        error: std::io::Error,
    },
    /// An answer that does not parse.
    #[error("malformed generic netlink answer to {0}")]
    Malformed(&'static str),
}

/// A generic netlink request: headers and attributes.
fn request(family: u16, flags: u16, cmd: u8, version: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; NLMSG_HEADER];
    out.extend_from_slice(&[cmd, version, 0, 0]);
    for (kind, value) in attributes {
        let length = 4 + value.len();
        out.extend_from_slice(&(length as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let length = out.len() as u32;
    out[0..4].copy_from_slice(&length.to_ne_bytes());
    out[4..6].copy_from_slice(&family.to_ne_bytes());
    out[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    out[8..12].copy_from_slice(&1u32.to_ne_bytes());
    out
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// What one answer says: an error code (0 is an acknowledgement), or the
/// attributes of a generic netlink message.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(i32),
    Attributes(Vec<(u16, Vec<u8>)>),
}

fn parse(bytes: &[u8]) -> Option<Answer> {
    let length = usize::try_from(u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?)).ok()?;
    let message = bytes.get(..length)?;
    if u16_at(message, 4)? == NLMSG_ERROR {
        let error = i32::from_ne_bytes(message.get(16..20)?.try_into().ok()?);
        return Some(Answer::Status(error));
    }
    let mut attributes = Vec::new();
    let mut at = NLMSG_HEADER + GENL_HEADER;
    while at + 4 <= message.len() {
        let length = usize::from(u16_at(message, at)?);
        let kind = u16_at(message, at + 2)? & 0x3fff;
        if length < 4 {
            return None;
        }
        attributes.push((kind, message.get(at + 4..at + length)?.to_vec()));
        at += length.next_multiple_of(4);
    }
    Some(Answer::Attributes(attributes))
}

fn exchange(socket: &Socket, message: &[u8], what: &'static str) -> Result<Answer, TunsrcError> {
    socket.send(message, 0)?;
    let mut buffer = vec![0u8; 8192];
    let received = socket.recv(&mut &mut buffer[..], 0)?;
    let answer = parse(&buffer[..received]).ok_or(TunsrcError::Malformed(what))?;
    match answer {
        Answer::Status(error) if error < 0 => Err(TunsrcError::Refused {
            what,
            error: std::io::Error::from_raw_os_error(-error),
        }),
        answer => Ok(answer),
    }
}

fn open() -> Result<(Socket, u16), TunsrcError> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let ask = request(
        GENL_ID_CTRL,
        0,
        CTRL_CMD_GETFAMILY,
        1,
        &[(CTRL_ATTR_FAMILY_NAME, b"SEG6\0")],
    );
    let family = match exchange(&socket, &ask, "the SEG6 family look-up")? {
        Answer::Attributes(attributes) => attributes
            .iter()
            .find(|(kind, _)| *kind == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, value)| u16_at(value, 0)),
        Answer::Status(_) => None,
    };
    Ok((
        socket,
        family.ok_or(TunsrcError::Malformed("the SEG6 family look-up"))?,
    ))
}

/// Sets this network namespace's seg6 tunnel source address. Blocking
/// (one request and its acknowledgement).
pub fn set(address: Ipv6Addr) -> Result<(), TunsrcError> {
    let (socket, family) = open()?;
    let message = request(
        family,
        NLM_F_ACK,
        SEG6_CMD_SET_TUNSRC,
        SEG6_GENL_VERSION,
        &[(SEG6_ATTR_DST, &address.octets())],
    );
    match exchange(&socket, &message, "setting the seg6 tunnel source")? {
        Answer::Status(_) => Ok(()),
        Answer::Attributes(_) => Err(TunsrcError::Malformed("setting the seg6 tunnel source")),
    }
}

/// This network namespace's seg6 tunnel source address (`::` when the
/// kernel chooses per packet). Blocking.
pub fn get() -> Result<Ipv6Addr, TunsrcError> {
    let (socket, family) = open()?;
    let message = request(family, 0, SEG6_CMD_GET_TUNSRC, SEG6_GENL_VERSION, &[]);
    let what = "reading the seg6 tunnel source";
    match exchange(&socket, &message, what)? {
        Answer::Attributes(attributes) => attributes
            .iter()
            .find(|(kind, _)| *kind == SEG6_ATTR_DST)
            .and_then(|(_, value)| <[u8; 16]>::try_from(value.as_slice()).ok())
            .map(Ipv6Addr::from)
            .ok_or(TunsrcError::Malformed(what)),
        Answer::Status(_) => Err(TunsrcError::Malformed(what)),
    }
}

/// Tunnelled packets that reached this network namespace and that no
/// decapsulation route took: the kernel's `Ip6InUnknownProtos` (from
/// snmp6 of the calling thread's network namespace). nemo's hosts have no ip6_tunnel
/// module, so an IPv6-in-IPv6 packet to the tunnel address from a source no
/// route names (the peer encapsulating from another address than it
/// registered) ends there. Other unknown protocols count too, which on a
/// nemo host are rare. `None` when the file cannot be read.
pub fn decapsulation_misses() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp6").ok()?;
    snmp6_counter(&text, "Ip6InUnknownProtos")
}

fn snmp6_counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == name).then(|| words.next()?.parse().ok())?
    })
}

/// How often [`watch_decapsulation_misses`] looks.
pub const DECAPSULATION_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Every [`DECAPSULATION_CHECK`], reads [`decapsulation_misses`], hands the
/// value to `record` (a metric's setter), and logs a warning when it rose:
/// the sign of a peer whose outer source is not the address its
/// decapsulation route names.
pub async fn watch_decapsulation_misses(record: impl Fn(i64)) {
    let mut last = decapsulation_misses();
    let mut tick = tokio::time::interval(DECAPSULATION_CHECK);
    loop {
        tick.tick().await;
        let now = decapsulation_misses();
        if let (Some(before), Some(after)) = (last, now) {
            if after > before {
                tracing::warn!(
                    packets = after - before,
                    "tunnelled packets reached this host that no decapsulation route took: \
                     a peer encapsulates from another address than the one it registered \
                     (check its seg6 tunnel source and its uplink addresses), or still \
                     tunnels to a tenant no longer attached here (during a migration)"
                );
            }
        }
        if let Some(value) = now {
            record(i64::try_from(value).unwrap_or(i64::MAX));
        }
        last = now.or(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp6_counters_are_read_by_name() {
        let text = "Ip6InReceives                   \t12\nIp6InUnknownProtos              \t7\n";
        assert_eq!(snmp6_counter(text, "Ip6InUnknownProtos"), Some(7));
        assert_eq!(snmp6_counter(text, "Ip6InReceives"), Some(12));
        assert_eq!(snmp6_counter(text, "Ip6Missing"), None);
        assert_eq!(
            snmp6_counter("Ip6InUnknownProtos x", "Ip6InUnknownProtos"),
            None
        );
    }

    #[test]
    fn requests_are_framed_and_padded() {
        let message = request(0x1b, NLM_F_ACK, 3, 1, &[(2, b"SEG6\0")]);
        // 16 + 4 + (4 + 5 padded to 8) = 32.
        assert_eq!(message.len(), 32);
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 32);
        assert_eq!(u16_at(&message, 4), Some(0x1b));
        assert_eq!(u16_at(&message, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&message[16..20], &[3, 1, 0, 0]);
        assert_eq!(u16_at(&message, 20), Some(9));
        assert_eq!(u16_at(&message, 22), Some(2));
        assert_eq!(&message[24..29], b"SEG6\0");
        assert_eq!(&message[29..32], &[0, 0, 0]);
    }

    #[test]
    fn answers_parse_and_garbage_does_not() {
        let mut error = request(NLMSG_ERROR, 0, 0, 0, &[]);
        error[16..20].copy_from_slice(&(-13i32).to_ne_bytes());
        assert_eq!(parse(&error), Some(Answer::Status(-13)));
        let family = request(GENL_ID_CTRL, 0, 1, 2, &[(1, &0x1bu16.to_ne_bytes())]);
        assert_eq!(
            parse(&family),
            Some(Answer::Attributes(vec![(
                1,
                0x1bu16.to_ne_bytes().to_vec()
            )]))
        );
        assert_eq!(parse(&[1, 2, 3]), None);
        let mut overrun = family.clone();
        overrun[20..22].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse(&overrun), None);
        let mut zero = family;
        zero[20..22].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(parse(&zero), None);
    }
}
