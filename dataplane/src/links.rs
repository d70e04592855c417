//! The host's interfaces by name, watched through netlink link events
//! (RTNLGRP_LINK): a tenant's port that appears or gets a carrier (QEMU
//! attached it: a VM starting or migrating in) or goes (its VM ended) is
//! seen the moment the kernel has it.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;

use crate::DataPlaneError;

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "link monitor",
        reason,
    }
}

/// Whether a link has a carrier (a tap's: a process, QEMU, holds it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// It has one.
    Up,
    /// It has none (or the kernel did not say).
    Down,
}

/// Every interface by name, with its carrier, as the kernel lists them.
pub async fn interfaces(handle: &Handle) -> Result<BTreeMap<String, Carrier>, DataPlaneError> {
    handle
        .link()
        .get()
        .execute()
        .try_filter_map(|link| async move {
            let mut name = None;
            let mut carrier = Carrier::Down;
            for attribute in link.attributes {
                match attribute {
                    LinkAttribute::IfName(n) => name = Some(n),
                    LinkAttribute::Carrier(1) => carrier = Carrier::Up,
                    _ => {}
                }
            }
            Ok(name.map(|name| (name, carrier)))
        })
        .try_collect()
        .await
        .map_err(|e| unavailable(format!("listing interfaces: {e}")))
}

/// Whether `interface` has a carrier (a tap's: a process, QEMU, holds it
/// open), from sysfs; `None` when there is no such interface.
pub fn has_carrier(interface: &str) -> Option<bool> {
    if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
        return None;
    }
    let folder = std::path::Path::new("/sys/class/net").join(interface);
    match std::fs::read_to_string(folder.join("carrier")) {
        Ok(value) => Some(value.trim() == "1"),
        // EINVAL: the interface is down (no carrier to read).
        Err(_) if folder.exists() => Some(false),
        Err(_) => None,
    }
}

/// Publishes the interfaces and their carriers on the returned channel
/// (the first value is the current set) until the task is dropped.
pub async fn watch_interfaces() -> Result<
    (
        watch::Receiver<BTreeMap<String, Carrier>>,
        tokio::task::JoinHandle<()>,
    ),
    DataPlaneError,
> {
    let (connection, handle, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(|e| unavailable(format!("subscribing to link events: {e}")))?;
    tokio::spawn(connection);
    let (sender, receiver) = watch::channel(interfaces(&handle).await?);
    let task = tokio::spawn(async move {
        // Any link event may add or remove a name or change a carrier:
        // list them again (link events come with VMs starting, migrating
        // and stopping, not per packet).
        while events.next().await.is_some() {
            match interfaces(&handle).await {
                Ok(now) => {
                    sender.send_if_modified(|current| {
                        let changed = *current != now;
                        *current = now;
                        changed
                    });
                    if sender.is_closed() {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%error, "re-reading interfaces failed"),
            }
        }
    });
    Ok((receiver, task))
}
