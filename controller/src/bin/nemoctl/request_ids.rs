//! The request ids of one nemoctl run: the command's id (`--request-id`,
//! or a fresh one), then `ID.2`, `ID.3`, ... for its later calls, so that
//! the same command run again with the same id sends the same ids in the
//! same order, and the controller answers each as it did the first time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static COMMAND_ID: OnceLock<String> = OnceLock::new();
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Sets the command's id: `given`, or a fresh random one.
pub fn start(given: Option<String>) {
    let id = given.unwrap_or_else(|| nemo_daemon::fresh_request_id("nemoctl"));
    let _ = COMMAND_ID.set(id);
}

/// The command's id.
pub fn command_id() -> &'static str {
    COMMAND_ID.get().map_or("", String::as_str)
}

/// The id of the next call.
pub fn next() -> String {
    match CALLS.fetch_add(1, Ordering::Relaxed) {
        0 => command_id().to_owned(),
        n => format!("{}.{}", command_id(), n + 1),
    }
}

/// Whether any call was sent with an id.
pub fn sent() -> bool {
    CALLS.load(Ordering::Relaxed) > 0
}
