//! nemo's routes over netlink, whatever the backend: installed (replacing
//! what was there, in one step), deleted, listed by table. Everything
//! carries protocol [`PROTOCOL`], so a listing tells what is nemo's.

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;
use netlink_packet_route::route::{RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{
    errno, refused, route_table, tolerate_missing, unavailable, ENOENT, ENOMEM, MAX_ENOMEM_WAIT,
    PROTOCOL,
};
use crate::DataPlaneError;

/// Installs a route, replacing any route to the same destination, waiting
/// out the kernel's per-CPU ENOMEM. Each lightweight-tunnel route takes a
/// per-CPU cache allocated atomically, from a pool the kernel refills in
/// the background; a burst of routes empties it (measured with seg6: after
/// about 12,500 routes at full speed, "percpu: atomic alloc failed" in the
/// kernel log). Waiting lets the pool refill.
use futures::TryStreamExt;
pub(crate) async fn install_route(
    handle: &Handle,
    message: RouteMessage,
    destination: Ipv6Net,
) -> Result<(), DataPlaneError> {
    let mut wait = Duration::from_millis(1);
    loop {
        let result = handle
            .route()
            .add(message.clone())
            .replace()
            .execute()
            .await;
        match result {
            Err(error) if errno(&error) == Some(ENOMEM) && wait < MAX_ENOMEM_WAIT => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) if errno(&error) == Some(ENOMEM) => {
                return Err(DataPlaneError::Exhausted {
                    action: "install route for",
                    destination,
                    reason: error.to_string(),
                })
            }
            other => return other.map_err(|e| refused("install route for", destination, e)),
        }
    }
}

/// Deletes nemo's route to `destination` in `table`, the one for packets
/// from `source` when it is source-specific (the kernel finds those only
/// by both). Gone already is fine.
pub(crate) async fn delete_route_from(
    handle: &Handle,
    table: u32,
    destination: Ipv6Net,
    source: Option<Ipv6Addr>,
) -> Result<(), DataPlaneError> {
    let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .table_id(table);
    if let Some(source) = source {
        builder = builder.source_prefix(source, 128);
    }
    let mut message = builder.build();
    message.header.protocol = RouteProtocol::Other(PROTOCOL);
    tolerate_missing(handle.route().del(message).execute().await)
        .map_err(|e| refused("remove route for", destination, e))
}

/// What `keep` takes of each of nemo's routes in a table.
pub(crate) async fn owned_route_messages<T>(
    table: u32,
    keep: impl Fn(&RouteMessage) -> Option<T> + Copy,
) -> Result<Vec<T>, DataPlaneError> {
    // Filters the kernel applies under strict checking (RTA_TABLE,
    // rtm_protocol; rtm_type unspecified keeps the throw routes). The
    // same test again below, for what the kernel sends regardless.
    let request = RouteMessageBuilder::<Ipv6Addr>::new()
        .table_id(table)
        .protocol(RouteProtocol::Other(PROTOCOL))
        .kind(RouteType::Unspec)
        .build();
    // A connection of its own, with strict checking on: the kernel then
    // filters the dump by table and protocol (only nemo's routes cross
    // the socket: at a million bindings, 2 million routes instead of
    // every route of every table), and dumps of two tables run side by
    // side (a socket holds one dump at a time). Its own because strict
    // checking would apply to the other requests' dumps too.
    let (connection, dumps, _) = rtnetlink::new_connection_with_strict_check()
        .map_err(|e| unavailable(format!("opening a netlink socket: {e}")))?;
    let connection = tokio::spawn(connection);
    let listed = dumps
        .route()
        .get(request)
        .execute()
        .try_filter_map(|m| async move {
            let ours =
                route_table(&m) == table && m.header.protocol == RouteProtocol::Other(PROTOCOL);
            Ok(ours.then(|| keep(&m)).flatten())
        })
        .try_collect()
        .await;
    connection.abort();
    match listed {
        // A table that holds no route does not exist: nothing of ours.
        Err(error) if errno(&error) == Some(ENOENT) => Ok(Vec::new()),
        other => other.map_err(|e| unavailable(format!("listing routes: {e}"))),
    }
}
