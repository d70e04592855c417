//! Which backend programs the kernel: what a config asks for, what this
//! kernel runs (probed by really installing), and the refused-packet
//! counter each publishes.

use crate::{bpf, linux, tunsrc};

/// The backends that program a kernel, in the order `auto` tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelBackend {
    /// BPF programs with the bindings in maps ([`bpf`]).
    Bpf,
    /// seg6 lightweight tunnels with an MTU gate ([`linux`]).
    Seg6,
}

impl KernelBackend {
    /// Its name in configs, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            KernelBackend::Bpf => "bpf",
            KernelBackend::Seg6 => "seg6",
        }
    }

    /// The other kernel backend.
    pub fn other(self) -> KernelBackend {
        match self {
            KernelBackend::Bpf => KernelBackend::Seg6,
            KernelBackend::Seg6 => KernelBackend::Bpf,
        }
    }

    /// Whether this kernel runs it (a real install in a scratch namespace).
    pub fn probe(self) -> Result<(), String> {
        match self {
            KernelBackend::Bpf => bpf::probe_bpf(),
            KernelBackend::Seg6 => linux::probe_seg6(),
        }
    }

    /// The first backend this kernel really runs, BPF first; when none
    /// does, why each failed (the kernel options they need, named).
    pub fn choose() -> Result<KernelBackend, String> {
        let mut reasons = Vec::new();
        for backend in [KernelBackend::Bpf, KernelBackend::Seg6] {
            match backend.probe() {
                Ok(()) => return Ok(backend),
                Err(reason) => reasons.push(format!("{}: {reason}", backend.name())),
            }
        }
        Err(format!(
            "this kernel runs no data plane backend nemo has ({})",
            reasons.join("; ")
        ))
    }
}

/// Publishes the tunnelled packets refused so far, for the daemons'
/// `decapsulation_misses` gauge: with seg6 the kernel's own counter
/// ([`tunsrc::watch_decapsulation_misses`]), otherwise what `read` (the data
/// plane's [`crate::HomeAgentDataPlane::refused_tunnelled`] or
/// [`crate::MobileRouterDataPlane::refused_tunnelled`]) counts, every second while
/// it counts anything (the memory backend counts nothing: this ends).
pub async fn watch_refused_tunnelled(
    backend: Option<KernelBackend>,
    read: impl Fn() -> Option<u64>,
    publish: impl Fn(i64),
) {
    if backend == Some(KernelBackend::Seg6) {
        return tunsrc::watch_decapsulation_misses(publish).await;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        match read() {
            Some(count) => publish(i64::try_from(count).unwrap_or(i64::MAX)),
            None => return,
        }
    }
}

/// Data plane backends (`[dataplane] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlaneBackend {
    /// The first kernel backend this kernel really runs, BPF first, then
    /// seg6 (probed by installing in a scratch namespace); with neither the
    /// daemon refuses to start, naming the kernel options missing.
    #[default]
    Auto,
    /// BPF programs (LWT encapsulation, tc ingress decapsulation) with the
    /// bindings in pinned maps.
    Bpf,
    /// seg6 encap.red / End.DT6 with an MTU gate, over rtnetlink.
    Seg6,
    /// Keep routes in memory only: the kernel is not programmed. For
    /// running the control plane alone; said loudly at start.
    Memory,
}

impl DataPlaneBackend {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            DataPlaneBackend::Auto => "auto",
            DataPlaneBackend::Bpf => "bpf",
            DataPlaneBackend::Seg6 => "seg6",
            DataPlaneBackend::Memory => "memory",
        }
    }

    /// The kernel backend it runs on (`None`: the memory backend), probed
    /// for `auto`; said in the log either way, and when `auto` finds none,
    /// why each backend cannot run here.
    pub fn resolve(self) -> Result<Option<KernelBackend>, String> {
        let backend = match self {
            DataPlaneBackend::Memory => return Ok(None),
            DataPlaneBackend::Bpf => KernelBackend::Bpf,
            DataPlaneBackend::Seg6 => KernelBackend::Seg6,
            DataPlaneBackend::Auto => KernelBackend::choose().map_err(|reason| {
                tracing::error!(%reason, "no data plane backend runs on this kernel");
                format!("dataplane backend \"auto\": {reason}")
            })?,
        };
        tracing::info!(
            backend = backend.name(),
            requested = self.name(),
            "data plane backend chosen"
        );
        Ok(Some(backend))
    }

    /// True for the backends that program the kernel.
    pub fn programs_the_kernel(self) -> bool {
        self != DataPlaneBackend::Memory
    }
}
