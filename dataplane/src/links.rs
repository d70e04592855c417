//! The host's interfaces by name, watched through netlink link events
//! (RTNLGRP_LINK): a tenant's port that appears (a VM migrating in) or
//! goes (its VM ended) is seen the moment the kernel has it.

use std::collections::BTreeSet;

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

/// Every interface's name, as the kernel lists them.
pub async fn interface_names(handle: &Handle) -> Result<BTreeSet<String>, DataPlaneError> {
    handle
        .link()
        .get()
        .execute()
        .try_filter_map(|link| async move {
            Ok(link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            }))
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

/// Publishes the interfaces' names on the returned channel (the first value
/// is the current set) until the task is dropped.
pub async fn watch_interface_names() -> Result<
    (
        watch::Receiver<BTreeSet<String>>,
        tokio::task::JoinHandle<()>,
    ),
    DataPlaneError,
> {
    let (connection, handle, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(|e| unavailable(format!("subscribing to link events: {e}")))?;
    tokio::spawn(connection);
    let (sender, receiver) = watch::channel(interface_names(&handle).await?);
    let task = tokio::spawn(async move {
        // Any link event may add or remove a name: list them again (link
        // events come with VMs starting and stopping, not per packet).
        while events.next().await.is_some() {
            match interface_names(&handle).await {
                Ok(names) => {
                    sender.send_if_modified(|current| {
                        let changed = *current != names;
                        *current = names;
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
