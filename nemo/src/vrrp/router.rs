//! The VRRPv3 state machine of one virtual router (RFC 5798 §6), sans-IO:
//! time comes in as arguments, advertisements to send and changes of role
//! come out of [`VirtualRouter::poll_action`], the next timer from
//! [`VirtualRouter::poll_timeout`].

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::advertisement::{Advertisement, Centiseconds};

/// The priority of the router that owns the virtual addresses (RFC 5798
/// §5.2.4): it is master whenever it runs.
pub const OWNER_PRIORITY: u8 = 255;
/// The priority a master sends when it stops (RFC 5798 §5.2.4).
pub const RESIGN_PRIORITY: u8 = 0;

/// The virtual router's link-local address when the configuration names
/// none: `fe80::5e:2:VRID`, the same on every member that runs `vrid`
/// (RFC 5798 §5.2.9: an IPv6 advertisement's first address is the
/// virtual router's link-local address). Not the EUI-64 of the virtual MAC
/// 00-00-5E-00-02-VRID (§7.4 keeps that out of interface identifiers); a
/// standard peer such as keepalived is configured with this address first.
pub fn default_virtual_link_local(vrid: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0x5e, 0x2, u16::from(vrid))
}

/// The addresses a virtual router advertises, in the order of RFC 5798
/// §5.2.9: `configured` as it is when it starts with a link-local address,
/// else [`default_virtual_link_local`] first.
pub fn virtual_addresses(vrid: u8, configured: &[Ipv6Addr]) -> Vec<Ipv6Addr> {
    match configured.first() {
        Some(first) if first.is_unicast_link_local() => configured.to_vec(),
        _ => std::iter::once(default_virtual_link_local(vrid))
            .chain(configured.iter().copied())
            .collect(),
    }
}

/// One virtual router's settings (RFC 5798 §6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// VRID, 1-255.
    pub vrid: u8,
    /// This router's priority: 1-254, or 255 for the addresses' owner.
    pub priority: u8,
    /// Advertisement_Interval.
    pub advert_interval: Centiseconds,
    /// Preempt_Mode: take over from a master of lower priority.
    pub preempt: bool,
    /// This router's own address on the link (its link-local address): the
    /// source of its advertisements and the tie-breaker between equal
    /// priorities (§6.4.3).
    pub primary_address: Ipv6Addr,
    /// The virtual addresses, the link-local one first (§5.2.9).
    pub addresses: Vec<Ipv6Addr>,
    /// Whose advertisements count.
    pub advertisers: Advertisers,
}

/// Whose advertisements a router acts on. VRRPv3 has no authentication
/// (RFC 5798 §9): any host on the link can advertise priority 255 and
/// depose the master, or a long interval that keeps every router backup;
/// naming the other routers' link-local addresses is the defence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advertisers {
    /// Any link-local source (the RFC's behaviour).
    Any,
    /// Only these link-local addresses (the other members'), none of
    /// which may claim to own the addresses (priority 255): a pair has no
    /// owner. Their advertisements count even when their address list
    /// differs from this router's (RFC 5798 §7.1 asks only that it be
    /// logged): two members that disagree on the list and ignore each
    /// other both hold the address.
    Only(Vec<Ipv6Addr>),
}

/// What a router made of an advertisement it acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Its addresses are this router's.
    Agreeing,
    /// A configured advertiser's address list differs from this router's
    /// (RFC 5798 §7.1: a misconfiguration, to log and report): acted on
    /// all the same.
    AddressesDiffer,
}

/// Where the router is (RFC 5798 §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running.
    Initialize,
    /// Watching the master.
    Backup,
    /// Owning the virtual addresses.
    Master,
}

/// Why a router became master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// It owns the addresses (priority 255) and started.
    Owner,
    /// No advertisement for Master_Down_Interval (§6.4.2): the master died,
    /// resigned, or has a lower priority and this router preempts.
    MasterDown,
}

/// Why a master stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepdown {
    /// A router of higher priority (or equal priority and higher address)
    /// advertises (§6.4.3).
    Preempted {
        /// Its primary address.
        by: Ipv6Addr,
        /// Its priority.
        priority: u8,
    },
    /// This router was shut down (§6.4.3: it sent priority 0).
    Shutdown,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advertisement: from the primary address to ff02::12, hop
    /// limit 255.
    Send(Advertisement),
    /// Become master: own the virtual addresses and announce them
    /// (unsolicited Neighbor Advertisements with Router and Override set,
    /// §6.4.2, §8.2).
    TakeOver(Takeover),
    /// Stop being master: give the virtual addresses up.
    StepDown(Stepdown),
    /// Announce the virtual addresses again (unsolicited Neighbor
    /// Advertisements): a router of lower priority advertised as master,
    /// so for a while it held the addresses and the neighbours may still
    /// point at it (keepalived's `vrrp_garp_lower_prio_repeat`; RFC 5798
    /// itself only discards such an advertisement).
    Reannounce,
}

/// Why a received advertisement was not acted on (RFC 5798 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// For another virtual router.
    OtherVirtualRouter,
    /// This router's own advertisement, looped back.
    Own,
    /// This router owns the addresses: nobody else's advertisement counts.
    Owner,
    /// The addresses differ from the configured ones, the sender is not
    /// their owner, and advertisers are not named ([`Advertisers::Any`]):
    /// perhaps another virtual router with the same VRID, to log.
    AddressMismatch,
    /// Not running.
    NotRunning,
    /// Its source is not a link-local address (RFC 5798 §5.1.2.1: an
    /// advertisement comes from the sender's link-local address).
    NotLinkLocal,
    /// Its source is not one of the configured advertisers.
    NotAnAdvertiser,
    /// A configured advertiser claims to own the addresses (priority 255),
    /// which no member of a pair does.
    OwnerClaim,
}

impl Discarded {
    /// A short name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Discarded::OtherVirtualRouter => "other_virtual_router",
            Discarded::Own => "own",
            Discarded::Owner => "owner",
            Discarded::AddressMismatch => "address_mismatch",
            Discarded::NotRunning => "not_running",
            Discarded::NotLinkLocal => "not_link_local",
            Discarded::NotAnAdvertiser => "not_an_advertiser",
            Discarded::OwnerClaim => "owner_claim",
        }
    }

    /// Whether it says something is wrong on the link (an attack or a
    /// misconfiguration), worth a warning, not only a count.
    pub fn is_suspect(self) -> bool {
        matches!(
            self,
            Discarded::AddressMismatch
                | Discarded::NotLinkLocal
                | Discarded::NotAnAdvertiser
                | Discarded::OwnerClaim
        )
    }
}

/// One virtual router.
#[derive(Debug)]
pub struct VirtualRouter {
    config: RouterConfig,
    state: State,
    /// Master_Adver_Interval: the master's, learnt from its advertisements.
    master_adver_interval: Centiseconds,
    /// Adver_Timer (master) or Master_Down_Timer (backup).
    timer: Option<Instant>,
    actions: VecDeque<Action>,
}

impl VirtualRouter {
    /// A router in Initialize.
    pub fn new(config: RouterConfig) -> VirtualRouter {
        VirtualRouter {
            master_adver_interval: config.advert_interval,
            config,
            state: State::Initialize,
            timer: None,
            actions: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The settings.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Skew_Time (§6.1): ((256 - Priority) * Master_Adver_Interval) / 256.
    pub fn skew_time(&self) -> Duration {
        let centiseconds = (256 - u64::from(self.config.priority))
            * u64::from(self.master_adver_interval.get())
            / 256;
        Duration::from_millis(centiseconds * 10)
    }

    /// Master_Down_Interval (§6.1): 3 * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval.as_duration() * 3 + self.skew_time()
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`VirtualRouter::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Changes the priority (a standby not yet in sync runs low, then
    /// rises). Takes effect with the next advertisement sent, and for the
    /// next Master_Down_Interval.
    pub fn set_priority(&mut self, priority: u8) {
        self.config.priority = priority;
    }

    /// The Startup event (§6.4.1).
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.config.priority == OWNER_PRIORITY {
            self.become_master(Takeover::Owner, now);
        } else {
            self.master_adver_interval = self.config.advert_interval;
            self.become_backup(now);
        }
    }

    /// The Shutdown event (§6.4.2, §6.4.3): a master resigns with priority
    /// 0 so a backup takes over after Skew_Time, not Master_Down_Interval.
    pub fn shutdown(&mut self) {
        if self.state == State::Master {
            self.actions
                .push_back(Action::Send(self.advertisement(RESIGN_PRIORITY)));
            self.actions.push_back(Action::StepDown(Stepdown::Shutdown));
        }
        self.timer = None;
        self.state = State::Initialize;
    }

    /// The timers (§6.4.2, §6.4.3).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_none_or(|at| at > now) {
            return;
        }
        match self.state {
            State::Backup => self.become_master(Takeover::MasterDown, now),
            State::Master => {
                self.actions
                    .push_back(Action::Send(self.advertisement(self.config.priority)));
                self.timer = Some(now + self.config.advert_interval.as_duration());
            }
            State::Initialize => self.timer = None,
        }
    }

    /// An advertisement from `source` (already decoded and checked:
    /// [`Advertisement::decode`]).
    pub fn handle_advertisement(
        &mut self,
        source: Ipv6Addr,
        advertisement: &Advertisement,
        now: Instant,
    ) -> Result<Heard, Discarded> {
        if self.state == State::Initialize {
            return Err(Discarded::NotRunning);
        }
        if advertisement.vrid != self.config.vrid {
            return Err(Discarded::OtherVirtualRouter);
        }
        if source == self.config.primary_address {
            return Err(Discarded::Own);
        }
        if self.config.priority == OWNER_PRIORITY {
            return Err(Discarded::Owner);
        }
        if !source.is_unicast_link_local() {
            return Err(Discarded::NotLinkLocal);
        }
        if let Advertisers::Only(advertisers) = &self.config.advertisers {
            if !advertisers.contains(&source) {
                return Err(Discarded::NotAnAdvertiser);
            }
            if advertisement.priority == OWNER_PRIORITY {
                return Err(Discarded::OwnerClaim);
            }
        }
        let heard = if advertisement.addresses == self.config.addresses {
            Heard::Agreeing
        } else if advertisement.priority == OWNER_PRIORITY
            || matches!(self.config.advertisers, Advertisers::Only(_))
        {
            Heard::AddressesDiffer
        } else {
            return Err(Discarded::AddressMismatch);
        };
        match self.state {
            State::Backup => {
                if advertisement.priority == RESIGN_PRIORITY {
                    // The master resigned: take over after Skew_Time.
                    self.timer = Some(now + self.skew_time());
                } else if !self.config.preempt || advertisement.priority >= self.config.priority {
                    self.master_adver_interval = advertisement.max_advert_interval;
                    self.timer = Some(now + self.master_down_interval());
                }
                // Else: a lower-priority master that this router preempts;
                // its Master_Down_Timer runs out.
            }
            State::Master => {
                if advertisement.priority == RESIGN_PRIORITY {
                    // Another master resigned: assert this one at once.
                    self.actions
                        .push_back(Action::Send(self.advertisement(self.config.priority)));
                    self.timer = Some(now + self.config.advert_interval.as_duration());
                } else if advertisement.priority > self.config.priority
                    || (advertisement.priority == self.config.priority
                        && source > self.config.primary_address)
                {
                    self.master_adver_interval = advertisement.max_advert_interval;
                    self.actions
                        .push_back(Action::StepDown(Stepdown::Preempted {
                            by: source,
                            priority: advertisement.priority,
                        }));
                    self.become_backup(now);
                } else {
                    // Another master of lower priority: it steps down when
                    // it hears this one; make the neighbours come back.
                    self.actions.push_back(Action::Reannounce);
                }
            }
            State::Initialize => {}
        }
        Ok(heard)
    }

    fn become_master(&mut self, why: Takeover, now: Instant) {
        self.state = State::Master;
        self.actions
            .push_back(Action::Send(self.advertisement(self.config.priority)));
        self.actions.push_back(Action::TakeOver(why));
        self.timer = Some(now + self.config.advert_interval.as_duration());
    }

    fn become_backup(&mut self, now: Instant) {
        self.state = State::Backup;
        self.timer = Some(now + self.master_down_interval());
    }

    fn advertisement(&self, priority: u8) -> Advertisement {
        Advertisement {
            vrid: self.config.vrid,
            priority,
            max_advert_interval: self.config.advert_interval,
            addresses: self.config.addresses.clone(),
        }
    }
}
