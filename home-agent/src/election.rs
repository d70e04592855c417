//! Which member of a home-agent pair is active: VRRPv3 on the home link
//! (`nemo::vrrp`, its socket `nemo_dataplane::vrrp`). Becoming master takes
//! the home-agent address(es) on the link (no DAD) and announces them with
//! unsolicited Neighbor Advertisements, then makes this member active;
//! stepping down makes it standby first, then gives the addresses up. A
//! stop resigns (priority 0), so the other member takes over after its
//! Skew_Time instead of three advertisement intervals.

use std::net::Ipv6Addr;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use nemo::vrrp::{Action, Advertisement, Heard, RouterConfig, VirtualRouter};
use nemo_dataplane::vrrp::{
    announce, announce_ipv4, release_addresses, release_ipv4_addresses, take_addresses,
    take_ipv4_addresses, VrrpSocket, MAX_ADVERTISEMENT,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::messages::Role;
use crate::metrics::Metrics;

/// How often an active member announces the home-agent address again
/// (unsolicited Neighbor Advertisements), beyond the takeover itself.
const ANNOUNCE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Advertisements read in a row before the timers and commands are looked
/// at again.
const MOST_RECEIVED_IN_A_ROW: usize = 64;

/// After a takeover, the address is announced with every advertisement for
/// this long: the old member's kernel may still hold the address (its
/// process died, the address had not lapsed yet) and answer a neighbour's
/// solicitation for it, pulling traffic back until the next announcement.
const ANNOUNCE_EAGERLY_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// The election's settings.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// The home link.
    pub interface: String,
    /// The virtual router.
    pub router: RouterConfig,
    /// IPv4 addresses that go with the role (`[pair] ipv4_addresses`):
    /// taken with the IPv6 ones, announced by gratuitous ARP.
    pub ipv4_addresses: Vec<std::net::Ipv4Addr>,
}

/// What the admin API reads of the election.
#[derive(Debug, Clone, Default)]
pub struct PairState {
    /// The virtual router.
    pub vrid: u8,
    /// This member's priority now.
    pub priority: u8,
    /// The last takeover: when, and why.
    pub last_takeover: Option<(SystemTime, String)>,
}

/// What the admin API asks of the election (a planned hand-over).
#[derive(Debug)]
pub enum ElectionCommand {
    /// Stop answering ahead of a resignation; `false` when this member is
    /// not master.
    Quiesce(oneshot::Sender<bool>),
    /// Resign, and stand by with priority 1 until restarted (so that it
    /// does not take the role back).
    Resign(oneshot::Sender<()>),
    /// A hand-over failed after `Quiesce`: answer again if still master;
    /// `false` when this member is no longer master.
    Resume(oneshot::Sender<bool>),
}

/// Runs the election until `stop` turns true, then resigns.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: ElectionSettings,
    netlink: rtnetlink::Handle,
    role: watch::Sender<Role>,
    metrics: Arc<Metrics>,
    state: Arc<RwLock<PairState>>,
    mut commands: mpsc::Receiver<ElectionCommand>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let index = nemo_dataplane::addresses::interface_index(&netlink, &settings.interface).await?;
    let source = settings.router.primary_address;
    let addresses = settings.router.addresses.clone();
    let socket = VrrpSocket::open(&settings.interface, source)?;
    // Whatever a previous run left: a standby holds no virtual address.
    release_addresses(&netlink, index, &addresses).await?;
    release_ipv4_addresses(&netlink, index, &settings.ipv4_addresses).await?;
    let mut router = VirtualRouter::new(settings.router.clone());
    if let Ok(mut state) = state.write() {
        state.vrid = settings.router.vrid;
        state.priority = settings.router.priority;
    }
    router.start(Instant::now());
    tracing::info!(
        interface = %settings.interface,
        vrid = router.config().vrid,
        priority = router.config().priority,
        "election: standing by"
    );
    let mut buffer = vec![0u8; MAX_ADVERTISEMENT];
    let mut received_in_a_row = 0usize;
    let mut member = Member {
        socket,
        netlink,
        index,
        interface: settings.interface.clone(),
        source,
        addresses,
        ipv4_addresses: settings.ipv4_addresses.clone(),
        role,
        metrics,
        state,
        took_over: None,
        announced: None,
        warned: std::collections::HashMap::new(),
    };
    loop {
        while let Some(action) = router.poll_action() {
            member.act(action).await;
        }
        let wake = router.poll_timeout();
        // Advertisements already queued first: a member that was paused
        // (SIGSTOP, a stalled host) must hear the master it missed before
        // its overdue Master_Down_Timer makes it take the address for a
        // moment. Not forever: after a run of them the timers and commands
        // get their turn, so that a flood cannot starve this member's own
        // advertisements.
        let receive_first = received_in_a_row < MOST_RECEIVED_IN_A_ROW;
        let event = tokio::select! {
            biased;
            received = member.socket.receive(&mut buffer), if receive_first => Wake::Received(received),
            () = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => Wake::Timer,
            Some(command) = commands.recv() => Wake::Command(command),
            _ = stop.wait_for(|stopping| *stopping) => Wake::Stop,
            // The turn of the timers after a run of advertisements (a
            // timer not yet due is left as it is).
            () = std::future::ready(()), if !receive_first => Wake::Timer,
        };
        received_in_a_row = match event {
            Wake::Received(_) => received_in_a_row + 1,
            _ => 0,
        };
        match event {
            Wake::Received(Err(error)) => {
                tracing::warn!(%error, "election: receive failed");
            }
            Wake::Received(Ok(received)) => {
                match Advertisement::decode(
                    &buffer[..received.len],
                    received.source,
                    received.hop_limit,
                ) {
                    Ok(advertisement) => match router.handle_advertisement(
                        received.source,
                        &advertisement,
                        Instant::now(),
                    ) {
                        Ok(Heard::Agreeing) => {}
                        Ok(Heard::AddressesDiffer) => {
                            member.metrics.vrrp_addresses_differ.inc();
                            member.warn_suspect(
                                "addresses_differ",
                                received.source,
                                &advertisement,
                                "election: the peer advertises other addresses than this member \
                                 (acted on; counted in nemo_ha_vrrp_addresses_differ_total): \
                                 make [pair] addresses the same on both",
                            );
                        }
                        Err(discarded) => {
                            member.discarded(discarded, received.source, &advertisement);
                        }
                    },
                    Err(error) => {
                        Metrics::count(
                            &member.metrics.dropped,
                            &format!("vrrp_{}", error.reason()),
                        );
                    }
                }
            }
            Wake::Timer => router.handle_timeout(Instant::now()),
            Wake::Command(ElectionCommand::Quiesce(respond)) => {
                let master = router.state() == nemo::vrrp::State::Master;
                if master {
                    let _ = member.role.send(Role::Standby);
                    tracing::warn!("election: handing over; no longer answering");
                }
                let _ = respond.send(master);
            }
            Wake::Command(ElectionCommand::Resume(respond)) => {
                let master = router.state() == nemo::vrrp::State::Master;
                if master {
                    let _ = member.role.send(Role::Active);
                    tracing::warn!("election: hand-over abandoned; answering again");
                }
                let _ = respond.send(master);
            }
            Wake::Command(ElectionCommand::Resign(respond)) => {
                router.set_priority(1);
                if let Ok(mut state) = member.state.write() {
                    state.priority = 1;
                }
                router.shutdown();
                while let Some(action) = router.poll_action() {
                    member.act(action).await;
                }
                router.start(Instant::now());
                tracing::warn!("election: handed over; standing by at priority 1 until restarted");
                let _ = respond.send(());
            }
            Wake::Stop => break,
        }
    }
    router.shutdown();
    while let Some(action) = router.poll_action() {
        member.act(action).await;
    }
    release_addresses(&member.netlink, member.index, &member.addresses).await?;
    release_ipv4_addresses(&member.netlink, member.index, &member.ipv4_addresses).await?;
    tracing::info!("election: resigned");
    Ok(())
}

/// What woke the election.
enum Wake {
    Received(std::io::Result<nemo_dataplane::vrrp::Received>),
    Timer,
    Command(ElectionCommand),
    Stop,
}

/// What the election's actions touch: the link, the addresses, the role
/// and what is reported of it.
struct Member {
    socket: VrrpSocket,
    netlink: rtnetlink::Handle,
    index: u32,
    interface: String,
    source: Ipv6Addr,
    addresses: Vec<Ipv6Addr>,
    ipv4_addresses: Vec<std::net::Ipv4Addr>,
    role: watch::Sender<Role>,
    metrics: Arc<Metrics>,
    state: Arc<RwLock<PairState>>,
    /// When this member last took over.
    took_over: Option<Instant>,
    /// When it last announced the addresses.
    announced: Option<Instant>,
    /// When each kind of suspect advertisement was last warned about.
    warned: std::collections::HashMap<&'static str, Instant>,
}

/// At most one warning per kind of suspect advertisement this often (a
/// flood is counted, not logged line by line).
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Member {
    /// Counts an advertisement the router did not act on
    /// (`nemo_ha_dropped_total{reason="vrrp_<why>"}`), and warns about a
    /// suspect one (a stranger, a forged owner, other addresses) at most
    /// every [`WARN_EVERY`] per kind.
    fn discarded(
        &mut self,
        why: nemo::vrrp::Discarded,
        source: Ipv6Addr,
        advertisement: &Advertisement,
    ) {
        Metrics::count(&self.metrics.dropped, &format!("vrrp_{}", why.name()));
        if !why.is_suspect() {
            tracing::debug!(why = why.name(), from = %source, "election: advertisement discarded");
            return;
        }
        self.warn_suspect(
            why.name(),
            source,
            advertisement,
            "election: advertisement discarded (counted in nemo_ha_dropped_total)",
        );
    }

    /// Warns about a suspect advertisement, at most every [`WARN_EVERY`]
    /// per kind.
    fn warn_suspect(
        &mut self,
        kind: &'static str,
        source: Ipv6Addr,
        advertisement: &Advertisement,
        message: &str,
    ) {
        let now = Instant::now();
        if self
            .warned
            .get(kind)
            .is_some_and(|at| now.duration_since(*at) < WARN_EVERY)
        {
            return;
        }
        self.warned.insert(kind, now);
        tracing::warn!(
            why = kind,
            from = %source,
            priority = advertisement.priority,
            addresses = ?advertisement.addresses,
            ours = ?self.addresses,
            "{message}; further ones warned about every 10 s"
        );
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Send(advertisement) => {
                if let Err(error) = self.socket.send(&advertisement.encode(self.source)).await {
                    tracing::warn!(%error, "election: sending an advertisement failed");
                }
                // A master renews its hold on the addresses with each
                // advertisement (they lapse if this process dies), and
                // announces them again now and then: after a split, the
                // neighbours may still point at the member that stepped
                // down.
                let active = *self.role.borrow() == Role::Active;
                if active && advertisement.priority != 0 {
                    if let Err(error) = self.take().await {
                        tracing::warn!(%error, "election: renewing the home-agent address failed");
                    }
                    let eager = self
                        .took_over
                        .is_some_and(|at| at.elapsed() < ANNOUNCE_EAGERLY_FOR);
                    let stale = self
                        .announced
                        .is_none_or(|at| at.elapsed() >= ANNOUNCE_REFRESH);
                    if eager || stale {
                        self.announce();
                    }
                }
            }
            Action::TakeOver(why) => {
                if let Err(error) = self.take().await {
                    tracing::error!(%error, "election: taking the home-agent address failed");
                }
                self.announce();
                self.took_over = Some(Instant::now());
                self.metrics.takeovers.inc();
                if let Ok(mut state) = self.state.write() {
                    state.last_takeover = Some((SystemTime::now(), format!("{why:?}")));
                }
                let _ = self.role.send(Role::Active);
                tracing::warn!(?why, "election: active");
            }
            Action::Reannounce => {
                self.announce();
                tracing::warn!(
                    "election: another member advertised as master; announced the address again"
                );
            }
            Action::StepDown(why) => {
                let _ = self.role.send(Role::Standby);
                let released =
                    match release_addresses(&self.netlink, self.index, &self.addresses).await {
                        Ok(()) => {
                            release_ipv4_addresses(&self.netlink, self.index, &self.ipv4_addresses)
                                .await
                        }
                        Err(error) => Err(error),
                    };
                if let Err(error) = released {
                    tracing::error!(%error, "election: giving up the home-agent address failed");
                }
                tracing::warn!(?why, "election: standby");
            }
        }
    }

    /// Takes (or renews) the addresses of both families.
    async fn take(&self) -> Result<(), nemo_dataplane::DataPlaneError> {
        take_addresses(&self.netlink, self.index, &self.addresses).await?;
        take_ipv4_addresses(&self.netlink, self.index, &self.ipv4_addresses).await
    }

    /// Unsolicited Neighbor Advertisements for the addresses, and a
    /// gratuitous ARP for the IPv4 ones, now.
    fn announce(&mut self) {
        if let Err(error) = announce(&self.interface, self.source, &self.addresses) {
            tracing::warn!(%error, "election: announcing the home-agent address failed");
        }
        if let Err(error) = announce_ipv4(&self.interface, &self.ipv4_addresses) {
            tracing::warn!(%error, "election: announcing the IPv4 addresses failed");
        }
        self.announced = Some(Instant::now());
    }
}
