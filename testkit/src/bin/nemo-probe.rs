//! `nemo-probe`: measures an outage with UDP echoes sent at a fixed pace.
//!
//! `ping` slows down when its packets go unanswered, so the gaps in its
//! sequence numbers understate an outage (seen in the lab: 25 missing 10 ms
//! pings over a 2-second silence). This probe sends on a fixed schedule
//! whatever comes back, and reports the longest silence in time.
//!
//! ```sh
//! nemo-probe echo --listen '[2001:db8:100::2]:7007'          # in the VM
//! nemo-probe send --target '[2001:db8:100::2]:7007' --interval-ms 2 --seconds 8 --csv probes.csv
//! ```
//!
//! `send` prints one line: `probe sent=.. received=.. lost=.. duplicates=..
//! longest_gap_ms=.. gap_from=.. gap_until=..`, the last two as Unix times
//! (seconds): the send time of the last answered probe before the longest
//! silence and the arrival of the first answer after it. `duplicates`
//! counts answers beyond a probe's first (a VM that got the probe twice:
//! the home agent copies a moving tenant's packets to both sites); `late`
//! answers that came after a later probe's (they waited: a paused VM's
//! port answered when it resumed), which end no silence.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "nemo-probe", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answers every datagram with itself.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Sends numbered probes on a fixed schedule and reports the silence.
    Send {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 2)]
        interval_ms: u64,
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        /// Also write every probe to this CSV file: sequence, its send
        /// time and its answer's arrival (Unix seconds; empty when lost),
        /// and the round trip in milliseconds.
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
    },
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn echo(listen: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(listen)?;
    println!("nemo-probe echo ready listen={}", socket.local_addr()?);
    let mut buffer = [0u8; 64];
    loop {
        let (len, from) = socket.recv_from(&mut buffer)?;
        let _ = socket.send_to(&buffer[..len], from);
    }
}

fn send(
    target: SocketAddr,
    interval: Duration,
    seconds: u64,
    csv: Option<&std::path::Path>,
) -> std::io::Result<()> {
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| std::io::Error::other("bind address"))?;
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    let count = (Duration::from_secs(seconds).as_micros() / interval.as_micros().max(1)) as usize;
    // Arrival time of each probe's answer, by sequence number.
    let arrivals: Arc<Mutex<Vec<Option<SystemTime>>>> = Arc::new(Mutex::new(vec![None; count]));
    let duplicates = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let receiver = {
        let socket = socket.try_clone()?;
        let arrivals = arrivals.clone();
        let duplicates = duplicates.clone();
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        std::thread::spawn(move || {
            let mut buffer = [0u8; 64];
            let quiet_until = Instant::now() + Duration::from_secs(seconds + 2);
            while Instant::now() < quiet_until {
                let Ok(len) = socket.recv(&mut buffer) else {
                    continue;
                };
                let now = SystemTime::now();
                let Some(sequence) = buffer
                    .get(..8)
                    .filter(|_| len >= 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                if let Ok(mut arrivals) = arrivals.lock() {
                    if let Some(slot) = arrivals.get_mut(sequence as usize) {
                        if slot.is_some() {
                            duplicates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        slot.get_or_insert(now);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let mut sent_at = Vec::with_capacity(count);
    for sequence in 0..count {
        // On schedule, whatever came back: the point of this probe.
        let due = started + interval * sequence as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent_at.push(SystemTime::now());
        // A send error (no route for a moment) is a lost probe.
        let _ = socket.send(&(sequence as u64).to_be_bytes());
    }
    let _ = receiver.join();
    let arrivals = arrivals
        .lock()
        .map_err(|_| std::io::Error::other("receiver panicked"))?
        .clone();
    if let Some(path) = csv {
        let mut text = String::from("sequence,sent_unix,answered_unix,rtt_ms\n");
        for (sequence, (sent, arrival)) in sent_at.iter().zip(&arrivals).enumerate() {
            match arrival {
                Some(arrival) => text.push_str(&format!(
                    "{sequence},{:.6},{:.6},{:.3}\n",
                    unix(*sent),
                    unix(*arrival),
                    arrival
                        .duration_since(*sent)
                        .unwrap_or_default()
                        .as_secs_f64()
                        * 1000.0
                )),
                None => text.push_str(&format!("{sequence},{:.6},,\n", unix(*sent))),
            }
        }
        std::fs::write(path, text)?;
    }
    let received = arrivals.iter().filter(|a| a.is_some()).count();
    let (longest, late_answers) = longest_silence(&sent_at, &arrivals);
    println!(
        "probe sent={count} received={received} lost={} duplicates={} late={late_answers} longest_gap_ms={:.1} gap_from={:.6} gap_until={:.6}",
        count - received,
        duplicates.load(std::sync::atomic::Ordering::Relaxed),
        longest.0.as_secs_f64() * 1000.0,
        longest.1.map_or(0.0, unix),
        longest.2.map_or(0.0, unix),
    );
    Ok(())
}

/// The longest silence: from the send time of an answered probe to the
/// arrival of the next answer, over the probes' sequence; and how many
/// answers were late. An answer that came after the answer to a later
/// probe is late (it waited somewhere: a paused VM's port that resumed):
/// it ends no silence, or a VM answering a queue from before would show
/// one as long as it waited.
type Silence = (Duration, Option<SystemTime>, Option<SystemTime>);

fn longest_silence(sent_at: &[SystemTime], arrivals: &[Option<SystemTime>]) -> (Silence, usize) {
    let count = arrivals.len().min(sent_at.len());
    let mut earliest_after: Vec<Option<SystemTime>> = vec![None; count];
    let mut running: Option<SystemTime> = None;
    for sequence in (0..count).rev() {
        earliest_after[sequence] = running;
        if let Some(arrival) = arrivals[sequence] {
            running = Some(running.map_or(arrival, |r| r.min(arrival)));
        }
    }
    let mut longest = (Duration::ZERO, None, None);
    let mut last_answered: Option<usize> = None;
    let mut late = 0;
    for sequence in 0..count {
        let Some(arrival) = arrivals[sequence] else {
            continue;
        };
        if earliest_after[sequence].is_some_and(|later| arrival > later) {
            late += 1;
            continue;
        }
        if let Some(previous) = last_answered {
            if sequence > previous + 1 {
                let silence = arrival
                    .duration_since(sent_at[previous])
                    .unwrap_or_default();
                if silence > longest.0 {
                    longest = (silence, Some(sent_at[previous]), Some(arrival));
                }
            }
        }
        last_answered = Some(sequence);
    }
    (longest, late)
}

fn main() -> std::io::Result<()> {
    match Args::parse().command {
        Command::Echo { listen } => echo(listen),
        Command::Send {
            target,
            interval_ms,
            seconds,
            csv,
        } => send(
            target,
            Duration::from_millis(interval_ms.max(1)),
            seconds,
            csv.as_deref(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_000_000 + ms)
    }

    #[test]
    fn a_late_answer_ends_no_silence() {
        let sent: Vec<SystemTime> = (0..6).map(|i| at(i * 2)).collect();
        // 1 and 2 lost; 3 answered 30 ms later; 4 and 5 at once.
        let arrivals = vec![
            Some(at(1)),
            None,
            None,
            Some(at(36)),
            Some(at(37)),
            Some(at(39)),
        ];
        let ((silence, from, until), late) = longest_silence(&sent, &arrivals);
        assert_eq!(
            (silence, from, until, late),
            (Duration::from_millis(36), Some(at(0)), Some(at(36)), 0)
        );
        // 1 waited in a paused port and was answered after everything
        // else: late, and the silence is the one the others show.
        let arrivals = vec![
            Some(at(1)),
            Some(at(900)),
            None,
            Some(at(36)),
            Some(at(37)),
            Some(at(39)),
        ];
        let ((silence, _, until), late) = longest_silence(&sent, &arrivals);
        assert_eq!(
            (silence, until, late),
            (Duration::from_millis(36), Some(at(36)), 1)
        );
    }
}
