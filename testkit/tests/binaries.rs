//! The lab's helper commands, as processes: `nemo-delay-relay` delays both
//! ways, `nemo-probe` counts what comes back. (Also what makes
//! `cargo test --workspace` build them for the lab test.)

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nemo_testkit::field;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a command and returns it with its first stdout line.
fn start(command: &mut Command) -> (Killed, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready).unwrap();
    (Killed(child), ready)
}

#[test]
fn delay_relay_adds_its_delay_each_way() {
    let echo = UdpSocket::bind("[::1]:0").unwrap();
    let upstream = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64];
        while let Ok((len, from)) = echo.recv_from(&mut buffer) {
            let _ = echo.send_to(&buffer[..len], from);
        }
    });
    let (_relay, ready) = start(
        Command::new(env!("CARGO_BIN_EXE_nemo-delay-relay"))
            .args(["--listen", "[::1]:0", "--one-way-ms", "25", "--upstream"])
            .arg(upstream.to_string()),
    );
    let relay = field(&ready, "listen");
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client.connect(&relay).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let started = Instant::now();
    client.send(b"hello").unwrap();
    let mut buffer = [0u8; 64];
    let len = client.recv(&mut buffer).unwrap();
    let round_trip = started.elapsed();
    assert_eq!(&buffer[..len], b"hello");
    assert!(round_trip >= Duration::from_millis(50), "{round_trip:?}");
}

#[test]
fn probe_counts_answers_and_silences() {
    let (_echo, ready) =
        start(Command::new(env!("CARGO_BIN_EXE_nemo-probe")).args(["echo", "--listen", "[::1]:0"]));
    let target = field(&ready, "listen");
    let output = Command::new(env!("CARGO_BIN_EXE_nemo-probe"))
        .args(["send", "--interval-ms", "5", "--seconds", "1", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{report}");
    assert_eq!(field(&report, "sent"), "200", "{report}");
    assert_eq!(field(&report, "received"), "200", "{report}");
    assert_eq!(field(&report, "lost"), "0", "{report}");
    // Nothing missing: no silence to report.
    assert_eq!(field(&report, "longest_gap_ms"), "0.0", "{report}");
}
