//! Waiting for a moment of a VM's live migration on QEMU's monitor (QMP,
//! the QEMU Machine Protocol: one JSON object a line on a socket; QEMU's
//! `docs/interop/qmp-spec.rst`): how an orchestrator tells nemo the moment
//! the tenant's VM resumes on its new hypervisor (`RESUME` on the
//! destination's monitor), or the moment it pauses on its old one for the
//! migration's last copy (`STOP` on the source's), with
//! `nemoctl place TENANT HYPERVISOR --when-qmp SOCKET [--qmp-event ...]`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest line read from the monitor (QEMU's events and answers are far
/// shorter): a peer that sends more is not a QEMU monitor.
const MOST_LINE: u64 = 64 * 1024;

/// The moment to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Moment {
    /// The VM runs (the destination's `RESUME`; met at once when it runs
    /// already).
    Resume,
    /// The VM stopped (the source's `STOP`, the start of the migration's
    /// last copy; met at once when it is stopped already).
    Stop,
}

impl Moment {
    fn event(self) -> &'static str {
        match self {
            Moment::Resume => "RESUME",
            Moment::Stop => "STOP",
        }
    }

    /// Whether the VM's status (`query-status`) says the moment is past.
    fn past(self, status: &str, running: bool) -> bool {
        match self {
            Moment::Resume => running,
            Moment::Stop => {
                !running && matches!(status, "paused" | "finish-migrate" | "postmigrate")
            }
        }
    }
}

/// The monitor: lines read, bounded, and commands sent.
struct Monitor {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Monitor {
    async fn next(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MOST_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            anyhow::bail!("the monitor closed the connection");
        }
        if !line.ends_with(b"\n") {
            anyhow::bail!("a line longer than {MOST_LINE} octets: not a QEMU monitor");
        }
        serde_json::from_slice(&line).context("a line that is not JSON: not a QEMU monitor")
    }

    /// Sends a command and returns its answer (events before it are
    /// handed to `heard`).
    async fn execute(
        &mut self,
        command: &str,
        heard: &mut impl FnMut(&str),
    ) -> anyhow::Result<serde_json::Value> {
        self.writer
            .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
            .await?;
        loop {
            let message = self.next().await?;
            if let Some(event) = message.get("event").and_then(|e| e.as_str()) {
                heard(event);
                continue;
            }
            if let Some(error) = message.get("error") {
                anyhow::bail!("QEMU refused {command}: {error}");
            }
            if let Some(answer) = message.get("return") {
                return Ok(answer.clone());
            }
        }
    }
}

/// Waits until the VM behind the monitor at `socket` reaches `moment`, at
/// most `limit`.
pub async fn wait_for(socket: &Path, moment: Moment, limit: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(limit, wait(socket, moment))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no {} on {} within {} s (--qmp-timeout)",
                moment.event(),
                socket.display(),
                limit.as_secs_f64()
            )
        })?
}

async fn wait(socket: &Path, moment: Moment) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to QEMU's monitor {}", socket.display()))?;
    let (reader, writer) = stream.into_split();
    let mut monitor = Monitor {
        reader: BufReader::new(reader),
        writer,
    };
    let greeting = monitor.next().await?;
    if greeting.get("QMP").is_none() {
        anyhow::bail!("{} is not a QEMU monitor (no greeting)", socket.display());
    }
    let mut met = false;
    let mut heard = |event: &str| met |= event == moment.event();
    monitor.execute("qmp_capabilities", &mut heard).await?;
    // The moment may be past already (the hook started late).
    let status = monitor.execute("query-status", &mut heard).await?;
    let running = status.get("running").and_then(|r| r.as_bool()) == Some(true);
    let state = status.get("status").and_then(|s| s.as_str()).unwrap_or("");
    if met || moment.past(state, running) {
        return Ok(());
    }
    loop {
        let message = monitor.next().await?;
        if message.get("event").and_then(|e| e.as_str()) == Some(moment.event()) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor as QEMU speaks it: greeting, answers, then `events`.
    async fn fake_qemu(
        dir: &Path,
        status: &'static str,
        events: &'static [&'static str],
    ) -> std::path::PathBuf {
        let path = dir.join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (reader, mut writer) = stream.into_split();
            let mut lines = BufReader::new(reader).lines();
            writer
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = if line.contains("query-status") {
                    format!(
                        "{{\"return\": {{\"status\": \"{status}\", \"running\": {}}}}}\n",
                        status == "running"
                    )
                } else {
                    "{\"return\": {}}\n".to_owned()
                };
                writer.write_all(answer.as_bytes()).await.unwrap();
                if line.contains("query-status") {
                    for event in events {
                        writer
                            .write_all(
                                format!("{{\"event\": \"{event}\", \"timestamp\": {{}}}}\n")
                                    .as_bytes(),
                            )
                            .await
                            .unwrap();
                    }
                }
            }
        });
        path
    }

    #[tokio::test]
    async fn waits_for_the_event_and_not_another() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_qemu(dir.path(), "inmigrate", &["MIGRATION", "RESUME"]).await;
        wait_for(&socket, Moment::Resume, Duration::from_secs(5))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_qemu(dir.path(), "inmigrate", &["MIGRATION"]).await;
        let error = wait_for(&socket, Moment::Resume, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no RESUME"), "{error}");
    }

    #[tokio::test]
    async fn a_moment_already_past_is_met_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_qemu(dir.path(), "running", &[]).await;
        wait_for(&socket, Moment::Resume, Duration::from_secs(5))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_qemu(dir.path(), "postmigrate", &[]).await;
        wait_for(&socket, Moment::Stop, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_is_not_qemu_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"hello\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let error = wait_for(&path, Moment::Resume, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not a QEMU monitor"), "{error}");
    }
}
