//! Prometheus metrics of the home agent, served over HTTP (`GET /metrics`,
//! by `nemo_daemon::serve_metrics`).

use nemo_daemon::BackendLabel;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label with one value.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The Binding Acknowledgement status code.
    pub status: String,
}

/// A label naming a reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Why a batch was answered without the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreplicated {
    /// No standby attached.
    NoStandby,
    /// The standby did not acknowledge within the timeout.
    TimedOut,
}

impl Unreplicated {
    /// Every reason, for counters exported at zero from the start.
    pub const ALL: [Unreplicated; 2] = [Unreplicated::NoStandby, Unreplicated::TimedOut];

    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            Unreplicated::NoStandby => "no_standby",
            Unreplicated::TimedOut => "timed_out",
        }
    }
}

/// Every metric the home agent keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Binding Acknowledgements sent, by status.
    pub acknowledgements: Family<StatusLabel, Counter>,
    /// Binding Updates dropped without an answer, and VRRP advertisements
    /// not acted on (`vrrp_<why>`), by reason.
    pub dropped: Family<ReasonLabel, Counter>,
    /// Packets that did not decode, by reason.
    pub malformed: Family<ReasonLabel, Counter>,
    /// Binding Errors sent.
    pub binding_errors: Counter,
    /// Binding Refresh Requests sent.
    pub refresh_requests: Counter,
    /// Bindings expired.
    pub expired: Counter,
    /// Bindings in the cache.
    pub bindings: Gauge,
    /// Time from receiving a Binding Update to sending its acknowledgement.
    pub bu_to_ba_seconds: Histogram,
    /// Time of one store flush.
    pub flush_seconds: Histogram,
    /// Bindings per flush.
    pub flush_batch: Histogram,
    /// Failures to program forwarding.
    pub forwarding_failures: Counter,
    /// Moved bindings whose old care-of address still gets copies now
    /// (make-before-break windows open).
    pub bicasts: Gauge,
    /// Windows opened since start.
    pub bicasts_started: Counter,
    /// The BPF programs' packet counters, by counter.
    pub dataplane_packets: Family<nemo_daemon::PacketCounterLabel, Gauge>,
    /// The translator's packet counters (issue 31), by counter:
    /// translated_4to6, translated_6to4, and each reason to drop.
    pub translator_packets: Family<nemo_daemon::PacketCounterLabel, Gauge>,
    /// The data plane backend running: 1 for its name.
    pub dataplane_backend: Family<BackendLabel, Gauge>,
    /// Tunnelled packets no decapsulation route took (the kernel's count,
    /// `nemo_dataplane::tunsrc::decapsulation_misses`).
    pub decapsulation_misses: Gauge,
    /// This member's role in a pair: 1 active, 0 standby.
    pub active: Gauge,
    /// Times this member became active.
    pub takeovers: Counter,
    /// Advertisements from the named peer acted on although their address
    /// list differs from this member's (RFC 5798 §7.1: a misconfiguration,
    /// or an earlier nemo without the virtual link-local address first).
    pub vrrp_addresses_differ: Counter,
    /// Batches the standby acknowledged (on its disk before the answers
    /// left).
    pub replicated_batches: Counter,
    /// Batches acknowledged without the standby, by reason: no standby
    /// attached, or it did not answer in time (the promise then rests on
    /// this member's disk alone).
    pub unreplicated_batches: Family<ReasonLabel, Counter>,
    /// A standby attached to this active (1) or not (0).
    pub standby_attached: Gauge,
    /// Standbys detached by this active, by reason
    /// (`replication::attached::Detached`: not_reading, unacknowledged,
    /// lost).
    pub standby_detached: Family<ReasonLabel, Counter>,
    /// Bindings a returning member offered after both were active, by
    /// verdict (`nemo::ha::Verdict`: taken, older, removed_here, ...).
    pub merge_offered: Family<ReasonLabel, Counter>,
    /// Replication connections and sessions refused or ended by this
    /// member, by reason (`WireError::reason`, and `not_the_peer`).
    pub replication_refused: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nemo_ha");
        let metrics = Metrics {
            acknowledgements: Family::default(),
            dropped: Family::default(),
            malformed: Family::default(),
            binding_errors: Counter::default(),
            refresh_requests: Counter::default(),
            expired: Counter::default(),
            bindings: Gauge::default(),
            bu_to_ba_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            flush_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            flush_batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            forwarding_failures: Counter::default(),
            bicasts: Gauge::default(),
            bicasts_started: Counter::default(),
            dataplane_packets: Family::default(),
            translator_packets: Family::default(),
            decapsulation_misses: Gauge::default(),
            dataplane_backend: Family::default(),
            active: Gauge::default(),
            takeovers: Counter::default(),
            vrrp_addresses_differ: Counter::default(),
            replicated_batches: Counter::default(),
            unreplicated_batches: Family::default(),
            standby_attached: Gauge::default(),
            standby_detached: Family::default(),
            merge_offered: Family::default(),
            replication_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "dataplane_backend",
            "The data plane backend this daemon runs (1 for its name: bpf, seg6 or memory)",
            metrics.dataplane_backend.clone(),
        );
        registry.register(
            "active",
            "1 when this member of a pair is active, 0 on standby",
            metrics.active.clone(),
        );
        registry.register(
            "takeovers",
            "Times this member became active",
            metrics.takeovers.clone(),
        );
        registry.register(
            "vrrp_addresses_differ",
            "VRRP advertisements from the peer acted on although their address list differs from this member's (a misconfiguration to fix)",
            metrics.vrrp_addresses_differ.clone(),
        );
        registry.register(
            "replicated_batches",
            "Batches on the standby's disk before their answers left",
            metrics.replicated_batches.clone(),
        );
        registry.register(
            "unreplicated_batches",
            "Batches answered without the standby, by reason",
            metrics.unreplicated_batches.clone(),
        );
        registry.register(
            "standby_attached",
            "1 while a standby follows this active",
            metrics.standby_attached.clone(),
        );
        registry.register(
            "standby_detached",
            "Standbys this active detached, by reason (not_reading: its queue filled; unacknowledged: a batch past replication_timeout_ms; lost: the connection failed)",
            metrics.standby_detached.clone(),
        );
        registry.register(
            "merge_offered",
            "Bindings the other member offered when it stepped down after both were active, by verdict (taken: newer than this member's)",
            metrics.merge_offered.clone(),
        );
        registry.register(
            "replication_refused",
            "Replication connections refused or sessions ended by this member, by reason (not_the_peer, unauthenticated, forged, malformed, ...)",
            metrics.replication_refused.clone(),
        );
        registry.register(
            "binding_acks",
            "Binding Acknowledgements sent, by status",
            metrics.acknowledgements.clone(),
        );
        registry.register(
            "dropped",
            "Binding Updates dropped without an answer, and VRRP advertisements not acted on (reason vrrp_*), by reason",
            metrics.dropped.clone(),
        );
        registry.register(
            "malformed",
            "Packets that did not decode, by reason",
            metrics.malformed.clone(),
        );
        registry.register(
            "binding_errors",
            "Binding Errors sent",
            metrics.binding_errors.clone(),
        );
        registry.register(
            "refresh_requests",
            "Binding Refresh Requests sent",
            metrics.refresh_requests.clone(),
        );
        registry.register("expired", "Bindings expired", metrics.expired.clone());
        registry.register(
            "bindings",
            "Bindings in the cache",
            metrics.bindings.clone(),
        );
        registry.register(
            "bu_to_ba_seconds",
            "Time from a Binding Update to its acknowledgement",
            metrics.bu_to_ba_seconds.clone(),
        );
        registry.register(
            "store_flush_seconds",
            "Time of one store flush",
            metrics.flush_seconds.clone(),
        );
        registry.register(
            "store_flush_batch",
            "Bindings made durable by one flush",
            metrics.flush_batch.clone(),
        );
        registry.register(
            "forwarding_failures",
            "Failures to program forwarding",
            metrics.forwarding_failures.clone(),
        );
        registry.register(
            "bicasts",
            "Moved bindings whose old care-of address still gets a copy of each packet ([dataplane] bicast_ms)",
            metrics.bicasts.clone(),
        );
        registry.register(
            "dataplane_packets",
            "Packets the BPF data plane counted, by counter (bicast_copied: copies to the care-of address a binding left; bicast_no_route: copies not sent, no route or neighbour to it)",
            metrics.dataplane_packets.clone(),
        );
        registry.register(
            "translator_packets",
            "Packets the translator (RFC 7915) counted: translated_4to6, translated_6to4 (at_arrival: how many of them were translated where they arrived), and each reason it dropped one (unmapped, not_global, fragment, source_route, icmp_untranslated, ...)",
            metrics.translator_packets.clone(),
        );
        registry.register(
            "bicasts_started",
            "Make-before-break windows opened (a binding moved to another care-of address)",
            metrics.bicasts_started.clone(),
        );
        registry.register(
            "decapsulation_misses",
            "Tunnelled packets to this host refused: from a peer not bound to them or malformed (bpf: its programs' count; seg6: kernel Ip6InUnknownProtos)",
            metrics.decapsulation_misses.clone(),
        );
        // Every labelled series an operator is told to watch exists from
        // the start, at zero: an alert on its rate needs it there.
        for reason in nemo::ha::DropReason::ALL
            .iter()
            .map(|r| r.name())
            .chain(["standby"])
        {
            let _ = metrics.dropped.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            });
        }
        for status in nemo::wire::BaStatus::ALL {
            let _ = metrics.acknowledgements.get_or_create(&StatusLabel {
                status: status.0.to_string(),
            });
        }
        for reason in nemo::ha::Malformed::REASONS {
            let _ = metrics.malformed.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            });
        }
        for why in Unreplicated::ALL {
            let _ = metrics.unreplicated_batches.get_or_create(&ReasonLabel {
                reason: why.name().to_owned(),
            });
        }
        for verdict in nemo::ha::Verdict::ALL {
            let _ = metrics.merge_offered.get_or_create(&ReasonLabel {
                reason: verdict.name().to_owned(),
            });
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Counts a reason in a family.
    pub fn count(family: &Family<ReasonLabel, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
