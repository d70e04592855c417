//! Which member of a home-agent pair is active: VRRPv3 on the home link
//! (`nemo::vrrp`, its socket `nemo_dataplane::vrrp`). Becoming master takes
//! the home-agent address(es) on the link (no DAD) and announces them with
//! unsolicited Neighbor Advertisements, then makes this member active;
//! stepping down makes it standby first, then gives the addresses up. A
//! stop resigns (priority 0), so the other member takes over after its
//! Skew_Time instead of three advertisement intervals.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Instant;

use nemo::vrrp::{Action, Advertisement, RouterConfig, VirtualRouter};
use nemo_dataplane::vrrp::{
    announce, release_addresses, take_addresses, VrrpSocket, MAX_ADVERTISEMENT,
};
use tokio::sync::watch;

use crate::driver::Role;
use crate::metrics::Metrics;

/// The election's settings.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// The home link.
    pub interface: String,
    /// The virtual router.
    pub router: RouterConfig,
}

/// Runs the election until `stop` turns true, then resigns.
pub async fn run(
    settings: ElectionSettings,
    netlink: rtnetlink::Handle,
    role: watch::Sender<Role>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let index = nemo_dataplane::addresses::interface_index(&netlink, &settings.interface).await?;
    let source = settings.router.primary_address;
    let addresses = settings.router.addresses.clone();
    let socket = VrrpSocket::open(&settings.interface, source)?;
    // Whatever a previous run left: a standby holds no virtual address.
    release_addresses(&netlink, index, &addresses).await?;
    let mut router = VirtualRouter::new(settings.router.clone());
    router.start(Instant::now());
    tracing::info!(
        interface = %settings.interface,
        vrid = router.config().vrid,
        priority = router.config().priority,
        "election: standing by"
    );
    let mut buffer = vec![0u8; MAX_ADVERTISEMENT];
    loop {
        while let Some(action) = router.poll_action() {
            act(
                action,
                &socket,
                &netlink,
                index,
                &settings.interface,
                source,
                &addresses,
                &role,
                &metrics,
            )
            .await;
        }
        let wake = router.poll_timeout();
        tokio::select! {
            received = socket.receive(&mut buffer) => {
                let received = match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::warn!(%error, "election: receive failed");
                        continue;
                    }
                };
                let advertisement = match Advertisement::decode(
                    &buffer[..received.len],
                    received.source,
                    received.hop_limit,
                ) {
                    Ok(advertisement) => advertisement,
                    Err(error) => {
                        Metrics::count(&metrics.dropped, &format!("vrrp_{}", error.reason()));
                        continue;
                    }
                };
                if let Err(discarded) = router.handle_advertisement(received.source, &advertisement, Instant::now()) {
                    tracing::debug!(?discarded, from = %received.source, "election: advertisement discarded");
                }
            }
            () = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => router.handle_timeout(Instant::now()),
            _ = stop.wait_for(|stopping| *stopping) => break,
        }
    }
    router.shutdown();
    while let Some(action) = router.poll_action() {
        act(
            action,
            &socket,
            &netlink,
            index,
            &settings.interface,
            source,
            &addresses,
            &role,
            &metrics,
        )
        .await;
    }
    release_addresses(&netlink, index, &addresses).await?;
    tracing::info!("election: resigned");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn act(
    action: Action,
    socket: &VrrpSocket,
    netlink: &rtnetlink::Handle,
    index: u32,
    interface: &str,
    source: Ipv6Addr,
    addresses: &[Ipv6Addr],
    role: &watch::Sender<Role>,
    metrics: &Metrics,
) {
    match action {
        Action::Send(advertisement) => {
            if let Err(error) = socket.send(&advertisement.encode(source)).await {
                tracing::warn!(%error, "election: sending an advertisement failed");
            }
            // A master renews its hold on the addresses with each
            // advertisement (they lapse if this process dies).
            if *role.borrow() == Role::Active && advertisement.priority != 0 {
                if let Err(error) = take_addresses(netlink, index, addresses).await {
                    tracing::warn!(%error, "election: renewing the home-agent address failed");
                }
            }
        }
        Action::TakeOver(why) => {
            if let Err(error) = take_addresses(netlink, index, addresses).await {
                tracing::error!(%error, "election: taking the home-agent address failed");
            }
            if let Err(error) = announce(interface, source, addresses) {
                tracing::warn!(%error, "election: announcing the home-agent address failed");
            }
            metrics.takeovers.inc();
            let _ = role.send(Role::Active);
            tracing::warn!(?why, "election: active");
        }
        Action::StepDown(why) => {
            let _ = role.send(Role::Standby);
            if let Err(error) = release_addresses(netlink, index, addresses).await {
                tracing::error!(%error, "election: giving up the home-agent address failed");
            }
            tracing::warn!(?why, "election: standby");
        }
    }
}
