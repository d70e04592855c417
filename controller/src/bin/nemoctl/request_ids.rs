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
    let id = given.unwrap_or_else(|| {
        let bytes = nemo_daemon::secret::random_octets::<8>().unwrap_or_else(|_| {
            // No randomness: the time and PID still tell runs apart.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (now ^ u64::from(std::process::id())).to_be_bytes()
        });
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("nemoctl-{hex}")
    });
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
