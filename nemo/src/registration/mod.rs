//! The mobile router's registration state machine for one tenant instance,
//! sans-IO: time comes in as arguments, packets to send come out of
//! [`Registrar::poll_transmit`], the next timer from
//! [`Registrar::poll_timeout`]. RFC 6275 §11.7.1, §11.7.3, §11.8, RFC 3963
//! §5, RFC 4285.
//!
//! - A care-of address (re)starts registration at once, cancelling what was
//!   in flight; no care-of address means nothing can be sent.
//! - No answer: retransmit with a new sequence number and a fresh timestamp
//!   (RFC 6275 §11.8), the timeout starting at InitialBindackTimeoutFirstReg
//!   (1.5 s) for a first registration and INITIAL_BINDACK_TIMEOUT (1 s)
//!   otherwise, doubling up to MAX_BINDACK_TIMEOUT (32 s).
//! - Accepted: refresh before the granted lifetime runs out (at the Binding
//!   Refresh Advice interval when the home agent gives one, otherwise at
//!   three quarters of the lifetime).
//! - 135: take the home agent's sequence number, add one, send at once.
//! - 144: take the home agent's clock from the returned timestamp (RFC 4285
//!   §6), send at once (once; again means back off).
//! - 146: stop (RFC 4285 §5.3: "SHOULD stop sending new Binding Updates")
//!   until told to try again. With a wrong key the 146 itself does not
//!   verify: it is reported ([`Registrar::last_unauthenticated_status`]) and
//!   retransmission goes on at the slowest rate, since an unauthenticated
//!   answer must not stop anything.
//! - Other rejections: report, and retry after a long back-off (32 s
//!   doubling to 5 minutes), never hammering the home agent.
//! - A Binding Refresh Request is answered with a Binding Update.
//! - An IPv4 care-of address (Dual-Stack Mobile IPv6, RFC 5555) registers
//!   the same way; the acknowledgement's NAT Detection option says how the
//!   tunnel is encapsulated ([`Encapsulation`]), and behind a NAT the
//!   refresh comes at least as often as its Refresh time (§4.3), so that
//!   the NAT keeps its mapping.
//! - Deregistration sends lifetime zero (RFC 6275 §11.7.1) and retransmits
//!   like a registration until acknowledged.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::Ipv6Net;

use crate::auth::authenticated_care_of;
use crate::auth::SecurityAssociation;
use crate::wire::{
    BaStatus, Lifetime, Message, MobilityHeader, MobilityOption, NatDetection, NatRefresh,
    NtpTimestamp, ParsedPacket, SequenceNumber,
};

mod messages;
pub use messages::{
    check_ack, check_binding_ack, parse_answer, AckError, BuildError, Registration, UdpOverIpv4,
};

/// InitialBindackTimeoutFirstReg (RFC 6275 §13).
pub const INITIAL_BINDACK_TIMEOUT_FIRST_REG: Duration = Duration::from_millis(1500);
/// INITIAL_BINDACK_TIMEOUT (RFC 6275 §12).
pub const INITIAL_BINDACK_TIMEOUT: Duration = Duration::from_secs(1);
/// MAX_BINDACK_TIMEOUT (RFC 6275 §12).
pub const MAX_BINDACK_TIMEOUT: Duration = Duration::from_secs(32);
/// Longest wait before trying again after a rejection.
pub const MAX_REJECTION_BACKOFF: Duration = Duration::from_secs(300);

/// What one tenant instance registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The mobile router's home address.
    pub home_address: Ipv6Addr,
    /// The home agent.
    pub home_agent: Ipv6Addr,
    /// Mobile Network Prefixes for explicit mode; empty for implicit mode.
    pub prefixes: Vec<Ipv6Net>,
    /// Lifetime to ask for.
    pub lifetime: Duration,
    /// The security association with the home agent.
    pub sa: SecurityAssociation,
    /// NAI sent with each Binding Update (RFC 4283), if any.
    pub nai: Option<String>,
}

/// Where the instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No care-of address: nothing can be sent.
    Detached,
    /// A registration is in flight.
    Registering,
    /// Registered until `expires`.
    Registered {
        /// When the binding at the home agent ends.
        expires: Instant,
    },
    /// Rejected; retrying later (or not at all for 146).
    Rejected {
        /// The home agent's answer.
        status: BaStatus,
    },
    /// A deregistration is in flight.
    Deregistering,
    /// Deregistered (or never registered and told to leave).
    Deregistered,
}

/// How the tunnel between the mobile router and its home agent is
/// encapsulated (RFC 5555 §4.1, §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    /// IPv6 in IPv6 (RFC 6275): an IPv6 care-of address.
    Ipv6,
    /// IPv6 in IPv4: an IPv4 care-of address with no NAT on the path.
    Ipv4,
    /// IPv6 in UDP in IPv4: behind a NAT (keepalives at least this often),
    /// or when the home agent wants UDP anyway (no keepalive).
    Udp {
        /// How often to refresh the NAT's mapping, if it must be.
        keepalive: Option<Duration>,
    },
}

impl Encapsulation {
    /// The encapsulation an acknowledgement to `care_of` sets (RFC 5555
    /// §4.2, §4.4.2). A NAT Detection option that reports a NAT (any
    /// Refresh time but all ones) or sets F means UDP; one with neither
    /// (which a home agent sends for every Binding Update that came in
    /// UDP, §4.2), or none, means IPv6 in IPv4.
    pub fn of(care_of: IpAddr, nat: Option<NatDetection>) -> Encapsulation {
        match (care_of, nat) {
            (IpAddr::V6(_), _) => Encapsulation::Ipv6,
            (IpAddr::V4(_), Some(nat))
                if nat.udp_required || nat.refresh != NatRefresh::NotNeeded =>
            {
                Encapsulation::Udp {
                    keepalive: nat.refresh.interval(),
                }
            }
            (IpAddr::V4(_), _) => Encapsulation::Ipv4,
        }
    }
}

/// Something the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The home agent accepted the registration.
    Registered {
        /// The care-of address registered.
        care_of: IpAddr,
        /// How the tunnel is encapsulated.
        encapsulation: Encapsulation,
        /// The lifetime granted.
        lifetime: Duration,
        /// Time from the first Binding Update of this attempt to the
        /// acknowledgement.
        took: Duration,
    },
    /// The home agent refused.
    Rejected {
        /// Its status.
        status: BaStatus,
    },
    /// The deregistration was acknowledged.
    Deregistered,
}

/// A Binding Update sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    sequence: SequenceNumber,
    timestamp: NtpTimestamp,
}

/// The registration state machine of one tenant instance.
#[derive(Debug)]
pub struct Registrar {
    config: InstanceConfig,
    care_of: Option<IpAddr>,
    sequence: SequenceNumber,
    state: State,
    /// Binding Updates of the current attempt (retransmissions included).
    sent: Vec<Sent>,
    attempt_started: Option<Instant>,
    timer: Option<Instant>,
    timeout: Duration,
    /// InitialBindackTimeoutFirstReg (RFC 6275 §13, a configuration
    /// variable): 1.5 s by default, time for a home agent's DAD, which a
    /// nemo home agent does not do.
    first_registration_timeout: Duration,
    rejection_backoff: Duration,
    /// Seconds to add to our clock for timestamps (learned from a 144).
    clock_offset: i64,
    clock_resynced: bool,
    /// The last timestamp sent: the next is always greater (RFC 4285 §6).
    last_timestamp: NtpTimestamp,
    ever_registered: bool,
    udp_over_ipv4: UdpOverIpv4,
    transmit: Vec<Vec<u8>>,
    events: Vec<Event>,
    /// Registrations acknowledged.
    pub registrations: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// The last status received.
    pub last_status: Option<BaStatus>,
    /// The status of the last answer that failed authentication (a wrong
    /// key shows here: the home agent's 146 cannot be verified). Reported,
    /// never acted on: anyone could forge it.
    pub last_unauthenticated_status: Option<BaStatus>,
}

impl Registrar {
    /// A registrar starting from `sequence` (persist it across restarts, or
    /// let a 135 teach it).
    pub fn new(config: InstanceConfig, sequence: SequenceNumber) -> Registrar {
        Registrar {
            config,
            care_of: None,
            sequence,
            state: State::Detached,
            sent: Vec::new(),
            attempt_started: None,
            timer: None,
            timeout: INITIAL_BINDACK_TIMEOUT_FIRST_REG,
            first_registration_timeout: INITIAL_BINDACK_TIMEOUT_FIRST_REG,
            rejection_backoff: MAX_BINDACK_TIMEOUT,
            clock_offset: 0,
            clock_resynced: false,
            last_timestamp: NtpTimestamp(0),
            ever_registered: false,
            udp_over_ipv4: UdpOverIpv4::WhenNeeded,
            transmit: Vec::new(),
            events: Vec::new(),
            registrations: 0,
            retransmissions: 0,
            last_status: None,
            last_unauthenticated_status: None,
        }
    }

    /// Asks for UDP encapsulation at an IPv4 care-of address even without
    /// a NAT (RFC 5555's F flag), from the next Binding Update on.
    pub fn set_udp_over_ipv4(&mut self, udp: UdpOverIpv4) {
        self.udp_over_ipv4 = udp;
    }

    /// Sets InitialBindackTimeoutFirstReg (RFC 6275 §13), the first wait
    /// for the answer to a first registration; at least 100 ms.
    pub fn set_first_registration_timeout(&mut self, timeout: Duration) {
        self.first_registration_timeout = timeout.max(Duration::from_millis(100));
        if !self.ever_registered && matches!(self.state, State::Detached) {
            self.timeout = self.first_registration_timeout;
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The care-of address in use.
    pub fn care_of(&self) -> Option<IpAddr> {
        self.care_of
    }

    /// The last sequence number used.
    pub fn sequence(&self) -> SequenceNumber {
        self.sequence
    }

    /// The configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// The next packet to send (an IPv6 packet with a Home Address option).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| self.transmit.remove(0))
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// When [`Registrar::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// A new care-of address (or none): registration restarts at once,
    /// cancelling what was in flight.
    pub fn set_care_of(&mut self, care_of: Option<IpAddr>, now: Instant, wall: SystemTime) {
        if care_of == self.care_of && self.state != State::Detached {
            return;
        }
        self.care_of = care_of;
        if matches!(self.state, State::Deregistered | State::Deregistering) {
            return;
        }
        match care_of {
            None => {
                self.state = State::Detached;
                self.sent.clear();
                // What was queued for the address it had stays unsent.
                self.transmit.clear();
                self.timer = None;
            }
            Some(_) => self.start(false, now, wall),
        }
    }

    /// Registers again now (an orchestrator's trigger, or after a 146 once
    /// the key was fixed).
    pub fn reregister(&mut self, now: Instant, wall: SystemTime) {
        if self.care_of.is_some() {
            self.start(false, now, wall);
        }
    }

    /// Deregisters: lifetime zero, retransmitted until acknowledged.
    pub fn deregister(&mut self, now: Instant, wall: SystemTime) {
        if self.care_of.is_none() || !self.ever_registered {
            self.state = State::Deregistered;
            self.timer = None;
            self.events.push(Event::Deregistered);
            return;
        }
        self.start(true, now, wall);
    }

    fn start(&mut self, deregistration: bool, now: Instant, wall: SystemTime) {
        self.state = if deregistration {
            State::Deregistering
        } else {
            State::Registering
        };
        self.sent.clear();
        self.clock_resynced = false;
        self.attempt_started = Some(now);
        self.timeout = if self.ever_registered {
            INITIAL_BINDACK_TIMEOUT
        } else {
            self.first_registration_timeout
        };
        self.send(now, wall);
    }

    fn wall_timestamp(&self, wall: SystemTime) -> NtpTimestamp {
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let adjusted = if self.clock_offset >= 0 {
            since + Duration::from_secs(self.clock_offset.unsigned_abs())
        } else {
            since.saturating_sub(Duration::from_secs(self.clock_offset.unsigned_abs()))
        };
        NtpTimestamp::from_unix(adjusted)
    }

    /// Sends one Binding Update of the current attempt and arms the timer.
    fn send(&mut self, now: Instant, wall: SystemTime) {
        let Some(care_of) = self.care_of else {
            return;
        };
        self.sequence = self.sequence.next();
        let deregistration = self.state == State::Deregistering;
        let timestamp = self
            .wall_timestamp(wall)
            .max(NtpTimestamp(self.last_timestamp.0.wrapping_add(1)));
        self.last_timestamp = timestamp;
        let registration = Registration {
            home_address: self.config.home_address,
            home_agent: self.config.home_agent,
            care_of,
            prefixes: self.config.prefixes.clone(),
            lifetime: if deregistration {
                Lifetime::ZERO
            } else {
                Lifetime::from_duration_ceil(self.config.lifetime)
            },
            sequence: self.sequence,
            timestamp,
            mobile_router: true,
            nai: self.config.nai.clone(),
            udp_over_ipv4: self.udp_over_ipv4,
        };
        // Building fails only for absurd configurations (hundreds of
        // prefixes); the driver validated the config.
        if let Ok(packet) = registration.packet(&self.config.sa) {
            self.transmit.push(packet);
        }
        self.sent.push(Sent {
            sequence: self.sequence,
            timestamp,
        });
        // Answers to the last few transmissions still count.
        if self.sent.len() > 8 {
            self.sent.remove(0);
        }
        self.timer = Some(now + self.timeout);
    }

    /// The timer fired: retransmit, refresh or retry as the state says.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        let Some(at) = self.timer else {
            return;
        };
        if now < at {
            return;
        }
        self.timer = None;
        match self.state {
            State::Registering | State::Deregistering => {
                self.retransmissions += 1;
                self.timeout = (self.timeout * 2).min(MAX_BINDACK_TIMEOUT);
                self.send(now, wall);
            }
            State::Registered { .. } => self.start(false, now, wall),
            State::Rejected { status } if status != BaStatus::AUTH_FAIL => {
                self.start(false, now, wall);
            }
            _ => {}
        }
    }

    /// A Binding Refresh Request from the home agent: register again now
    /// (RFC 6275 §11.7.4). Unauthenticated requests are ignored.
    pub fn handle_refresh_request(&mut self, mh: &[u8], now: Instant, wall: SystemTime) -> bool {
        let Some(care_of) = self.care_of else {
            return false;
        };
        let valid = crate::auth::verify(
            mh,
            authenticated_care_of(care_of),
            self.config.home_address,
            &self.config.sa,
        )
        .is_ok()
            && matches!(
                MobilityHeader::decode(mh).map(|h| h.message),
                Ok(Message::BindingRefreshRequest(_))
            );
        if valid && matches!(self.state, State::Registered { .. } | State::Registering) {
            self.start(false, now, wall);
        }
        valid
    }

    /// A Binding Acknowledgement packet (IPv6, type 2 routing header):
    /// [`Registrar::handle_parsed_ack`] on [`parse_answer`]'s result.
    pub fn handle_ack(
        &mut self,
        packet: &[u8],
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), AckError> {
        let (parsed, message) = parse_answer(packet)?;
        self.handle_parsed_ack(&parsed, message, now, wall)
    }

    /// A Binding Acknowledgement, parsed and decoded once by the caller.
    /// Returns an error, and changes nothing, when it is not a valid answer
    /// to what is in flight.
    pub fn handle_parsed_ack(
        &mut self,
        parsed: &ParsedPacket<'_>,
        message: Message,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), AckError> {
        let Some(care_of) = self.care_of else {
            return Err(AckError::NoCareOf);
        };
        // What it claims, kept for the operator when it does not verify;
        // nothing is acted on.
        let claimed = match &message {
            Message::BindingAck(ba) => Some(ba.status),
            _ => None,
        };
        let ba = match check_ack(
            parsed,
            message,
            care_of,
            self.config.home_address,
            &self.config.sa,
        ) {
            Ok(ba) => ba,
            Err(error @ AckError::Auth(_)) => {
                self.last_unauthenticated_status = claimed;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let timestamp = ba.options.iter().find_map(|o| match o {
            MobilityOption::ReplayProtection(t) => Some(*t),
            _ => None,
        });
        let Some(sent) = self
            .sent
            .iter()
            .find(|s| s.sequence == ba.sequence)
            .copied()
        else {
            // A 135 carries the home agent's sequence number, not ours:
            // match it by timestamp instead.
            if ba.status == BaStatus::SEQUENCE_OUT_OF_WINDOW
                && timestamp.is_some_and(|t| self.sent.iter().any(|s| s.timestamp == t))
                && matches!(self.state, State::Registering | State::Deregistering)
            {
                self.last_status = Some(ba.status);
                self.sequence = ba.sequence;
                self.send(now, wall);
                return Ok(());
            }
            return Err(AckError::NotAck(6));
        };
        // RFC 4285 §6: a BA whose timestamp differs from the BU's is
        // discarded, except the 144 that carries the home agent's time.
        if ba.status != BaStatus::ID_MISMATCH && timestamp.is_some_and(|t| t != sent.timestamp) {
            return Err(AckError::NotAck(6));
        }
        if !matches!(self.state, State::Registering | State::Deregistering) {
            // A late duplicate: nothing to do.
            return Ok(());
        }
        self.last_status = Some(ba.status);
        // RFC 6275 §10.3.2: a home agent that holds no home registration
        // answers a deregistration with 133. That is the state asked for
        // (an earlier transmission whose answer was lost may have removed
        // it): deregistered.
        let deregistered = ba.status.is_accepted()
            || (ba.status == BaStatus::NOT_HOME_AGENT && self.state == State::Deregistering);
        if deregistered {
            let took = self.attempt_started.map_or(Duration::ZERO, |started| {
                now.saturating_duration_since(started)
            });
            self.sent.clear();
            self.rejection_backoff = MAX_BINDACK_TIMEOUT;
            if self.state == State::Deregistering {
                self.state = State::Deregistered;
                self.timer = None;
                self.events.push(Event::Deregistered);
                return Ok(());
            }
            let lifetime = ba.lifetime.as_duration();
            let advice = ba.options.iter().find_map(|o| match o {
                MobilityOption::BindingRefreshAdvice { refresh_interval } => {
                    Some(refresh_interval.as_duration())
                }
                _ => None,
            });
            let nat = ba.options.iter().find_map(|o| match o {
                MobilityOption::NatDetection(nat) => Some(*nat),
                _ => None,
            });
            let encapsulation = Encapsulation::of(care_of, nat);
            let refresh = advice
                .filter(|a| !a.is_zero() && *a < lifetime)
                .unwrap_or(lifetime * 3 / 4);
            // RFC 5555 §4.3: the Binding Update refreshes the NAT's mapping
            // too, at the home agent's Refresh time.
            let refresh = match encapsulation {
                Encapsulation::Udp {
                    keepalive: Some(keepalive),
                } => refresh.min(keepalive.max(Duration::from_secs(1))),
                _ => refresh,
            };
            self.state = State::Registered {
                expires: now + lifetime,
            };
            self.timer = Some(now + refresh);
            self.ever_registered = true;
            self.registrations += 1;
            self.events.push(Event::Registered {
                care_of,
                encapsulation,
                lifetime,
                took,
            });
            return Ok(());
        }
        match ba.status {
            BaStatus::SEQUENCE_OUT_OF_WINDOW => {
                // RFC 6275 §11.7.3: take the home agent's number.
                self.sequence = ba.sequence;
                self.send(now, wall);
            }
            BaStatus::ID_MISMATCH if !self.clock_resynced => {
                // RFC 4285 §6: the high 32 bits are the home agent's clock.
                if let Some(theirs) = timestamp {
                    let ours = i64::from(self.wall_timestamp(wall).seconds());
                    self.clock_offset += i64::from(theirs.seconds()) - ours;
                }
                self.clock_resynced = true;
                self.send(now, wall);
            }
            status => {
                self.events.push(Event::Rejected { status });
                self.state = State::Rejected { status };
                self.sent.clear();
                self.timer = if status == BaStatus::AUTH_FAIL {
                    None
                } else {
                    Some(now + self.rejection_backoff)
                };
                self.rejection_backoff = (self.rejection_backoff * 2).min(MAX_REJECTION_BACKOFF);
            }
        }
        Ok(())
    }
}
