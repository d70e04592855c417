//! nemo's BPF data plane: IPv6-in-IPv6 tunnels (RFC 2473) encapsulated by
//! an LWT program and taken out by a tc ingress program, with the bindings
//! in BPF maps the daemon updates in place (`dataplane/bpf/tunnel.bpf.c`,
//! compiled by clang at build time and loaded through libbpf).
//!
//! Why libbpf (libbpf-rs) and not aya: the encapsulation is an `lwt_xmit`
//! program, and aya loads no LWT program types (0.13 and 0.14 list them only
//! as program info); libbpf loads any section type, reuses pinned maps, and
//! attaches tc programs over netlink itself. Rust-to-BPF (aya-ebpf) needs a
//! nightly toolchain and bpf-linker, which these machines cannot fetch.
//!
//! Maps are pinned in a bpf filesystem folder of the daemon's own
//! (`pin_dir`): a restarted daemon, `kill -9` included, loads its programs
//! again over the same maps, replaces them where they are attached (a route
//! replace and a tc filter replace are each one step), and forwarding never
//! stops. After a reboot the pins are gone and the maps are filled again
//! from the daemon's store.

pub mod maps;
mod routes;
pub mod translator;

mod home_agent;
mod mobile_router;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, ObjectBuilder};

pub use home_agent::{BpfHomeAgent, BpfHomeAgentConfig};
pub use mobile_router::{BpfMobileRouter, BpfMobileRouterConfig};
#[cfg(test)]
pub(crate) use routes::encap_route;
pub use routes::TcHook;

use crate::DataPlaneError;
use maps::Counter;

/// The compiled programs (clang, at build time).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tunnel.bpf.o"));

/// The magic number of a bpf filesystem (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What libbpf said during the last load: the verifier's log among it.
static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());
/// Most of libbpf's log kept for an error (the verifier's last lines are
/// the ones that say what it refused).
const MAX_LOG: usize = 16 * 1024;

fn keep_libbpf_log(_level: libbpf_rs::PrintLevel, message: String) {
    let mut log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    log.push_str(&message);
    if log.len() > 4 * MAX_LOG {
        let cut = log.len() - MAX_LOG;
        let cut = (cut..log.len())
            .find(|at| log.is_char_boundary(*at))
            .unwrap_or(log.len());
        log.drain(..cut);
    }
}

/// A map update or delete the kernel refused: no room (a full map: the
/// LPM trie answers ENOSPC, a hash E2BIG; or ENOMEM) or another reason.
pub(crate) fn refused(
    action: &'static str,
    destination: ipnet::Ipv6Net,
    error: libbpf_rs::Error,
) -> DataPlaneError {
    let reason = error.to_string();
    let full = matches!(
        error.kind(),
        libbpf_rs::ErrorKind::OutOfMemory | libbpf_rs::ErrorKind::TooBig
    ) || reason.contains("os error 28");
    if full {
        DataPlaneError::Exhausted {
            action,
            destination,
            reason,
        }
    } else {
        DataPlaneError::Refused {
            action,
            destination,
            reason,
        }
    }
}

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "bpf",
        reason,
    }
}

/// The program kinds in the object, by the role that attaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Home agent: encapsulate by destination (`lwt_xmit`).
    EncapByDestination,
    /// Mobile router: encapsulate by source (`lwt_xmit`).
    EncapBySource,
    /// Home agent: decapsulate, the peer looked up by inner source (tc).
    DecapBySource,
    /// Mobile router: decapsulate, the peer looked up by inner
    /// destination (tc).
    DecapByDestination,
    /// Home agent: copy tunnelled packets to a moving tenant's second
    /// care-of address (tc egress).
    Bicast,
    /// Mobile router: release a held tenant on its VM's first frame (tc
    /// ingress of its port).
    Release,
}

impl Program {
    /// Its function name in the object.
    pub fn name(self) -> &'static str {
        match self {
            Program::EncapByDestination => "nemo_encap_dst",
            Program::EncapBySource => "nemo_encap_src",
            Program::DecapBySource => "nemo_decap_src",
            Program::DecapByDestination => "nemo_decap_dst",
            Program::Bicast => "nemo_bicast",
            Program::Release => "nemo_release",
        }
    }
}

/// The loaded programs and their maps.
#[derive(Debug)]
pub struct Programs {
    object: Object,
    /// A prefix (home address, Mobile Network Prefix) to its binding's
    /// tunnel peer.
    pub bindings: MapHandle,
    /// A prefix to its second tunnel peer while its tenant moves.
    pub also: MapHandle,
    /// This host's tunnel address (one entry).
    pub local: MapHandle,
    /// This host's IPv4 tunnel address and UDP port (one entry; RFC 5555).
    pub local4: MapHandle,
    /// A held tenant's port to what releases it.
    pub holds: MapHandle,
    counters: MapHandle,
    pin_dir: Option<PathBuf>,
}

impl Programs {
    /// Loads the programs. With `pin_dir` (a folder on a bpf filesystem,
    /// created if missing) the maps are pinned there, and maps already
    /// pinned there by an earlier run are used as they are (a restart keeps
    /// every binding). Without it the maps live as long as what uses them
    /// (tests of the programs alone). A refused load says why, with the
    /// verifier's log.
    pub fn load(pin_dir: Option<&Path>) -> Result<Programs, DataPlaneError> {
        Self::load_object(OBJECT, pin_dir)
    }

    /// [`Programs::load`] from another compiled object: for tests of the
    /// loader's failure paths (an object the verifier refuses).
    pub fn load_object(object: &[u8], pin_dir: Option<&Path>) -> Result<Programs, DataPlaneError> {
        if let Some(dir) = pin_dir {
            check_pin_dir(dir)?;
            drop_incompatible_pins(dir);
        }
        let object = open_object(object, pin_dir)?;
        let map = |name: &str, key: usize, value: usize| object_map(&object, name, key, value);
        let bindings = map(maps::BINDINGS, maps::PREFIX_SIZE, maps::PEER_SIZE)?;
        let also = map(maps::ALSO, maps::PREFIX_SIZE, maps::SECOND_SIZE)?;
        let local = map(maps::LOCAL, 4, maps::LOCAL_SIZE)?;
        let local4 = map(maps::LOCAL4, 4, maps::LOCAL_SIZE)?;
        let holds = map(maps::HOLDS, 4, maps::HOLD_SIZE)?;
        let counters = map(maps::COUNTERS, 4, 8)?;
        if counters.max_entries() as usize != Counter::ALL.len() {
            return Err(unavailable(format!(
                "map {}: {} counters in the object, {} in maps.rs",
                maps::COUNTERS,
                counters.max_entries(),
                Counter::ALL.len()
            )));
        }
        Ok(Programs {
            object,
            bindings,
            also,
            local,
            local4,
            holds,
            counters,
            pin_dir: pin_dir.map(Path::to_owned),
        })
    }

    /// A program's file descriptor, to attach it (a duplicate: keep it
    /// open until the attachment's netlink request is answered).
    pub fn fd(&self, program: Program) -> Result<OwnedFd, DataPlaneError> {
        program_fd(&self.object, program.name())
    }

    /// Runs `program` once on `packet` (BPF_PROG_TEST_RUN: no interface,
    /// no namespace); its return code and the packet as it left.
    pub fn test_run(
        &self,
        program: Program,
        packet: &[u8],
    ) -> Result<(u32, Vec<u8>), DataPlaneError> {
        run_program(&self.object, program.name(), packet)
    }

    /// Sets the address tunnelled packets must be sent to.
    pub fn set_local(&self, address: std::net::Ipv6Addr) -> Result<(), DataPlaneError> {
        self.local
            .update(
                &0u32.to_ne_bytes(),
                &maps::address_value(address),
                MapFlags::ANY,
            )
            .map_err(|e| unavailable(format!("setting the tunnel address: {e}")))
    }

    /// Sets this host's IPv4 tunnel address and the UDP port its DSMIPv6
    /// socket has (RFC 5555 §4.1): the outer source of what it sends to an
    /// IPv4 peer, and where such packets must arrive; `None` takes IPv4
    /// tunnels away.
    pub fn set_local4(&self, local: Option<std::net::SocketAddrV4>) -> Result<(), DataPlaneError> {
        let value = local.map_or([0u8; maps::LOCAL_SIZE], maps::local4_value);
        self.local4
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|e| unavailable(format!("setting the IPv4 tunnel address: {e}")))
    }

    /// The IPv4 tunnel address and port set (`None`: none).
    pub fn local4(&self) -> Option<std::net::SocketAddrV4> {
        let value = self
            .local4
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()??;
        match maps::value_peer(&value)? {
            crate::Peer::Udp(local) => Some(local),
            _ => None,
        }
    }

    /// The tunnel address set (`None`: not set yet, or unreadable).
    pub fn local_address(&self) -> Option<std::net::Ipv6Addr> {
        let value = self
            .local
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()??;
        maps::value_address(&value).filter(|a| !a.is_unspecified())
    }

    /// A counter, summed over the CPUs.
    pub fn counter(&self, counter: Counter) -> u64 {
        percpu_sum(&self.counters, counter as u32)
    }

    /// Every counter by its name, summed over the CPUs.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|counter| (counter.name(), self.counter(*counter)))
            .collect()
    }

    /// Tunnelled packets the decapsulation refused: spoofed or malformed.
    pub fn refused_tunnelled(&self) -> u64 {
        self.counter(Counter::DecapSpoofed) + self.counter(Counter::DecapMalformed)
    }

    /// Every (prefix, peer) in the bindings map.
    pub fn listed_bindings(&self) -> std::collections::HashMap<ipnet::Ipv6Net, crate::Peer> {
        self.bindings
            .keys()
            .filter_map(|key| {
                let prefix = maps::key_prefix(&key)?;
                let value = self.bindings.lookup(&key, MapFlags::ANY).ok()??;
                Some((prefix, maps::value_peer(&value)?))
            })
            .collect()
    }

    /// Empties the map of moving tenants (no copies to second peers).
    pub fn clear_also(&self) {
        clear(&self.also);
    }

    /// Empties the bindings map, the map of moving tenants and the holds.
    pub fn clear_bindings(&self) {
        clear(&self.bindings);
        clear(&self.also);
        clear(&self.holds);
    }

    /// Where the maps are pinned, if they are.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Removes the pins (the maps then live only as long as what uses them).
    pub fn unpin(&self) -> Result<(), DataPlaneError> {
        let Some(dir) = &self.pin_dir else {
            return Ok(());
        };
        for name in [
            maps::BINDINGS,
            maps::ALSO,
            maps::LOCAL,
            maps::LOCAL4,
            maps::HOLDS,
            maps::COUNTERS,
        ] {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable(format!("unpinning {name}: {e}"))),
            }
        }
        let _ = std::fs::remove_dir(dir);
        Ok(())
    }
}

/// Loads a compiled object, its `nemo_` maps pinned in `pin_dir` (those
/// pinned there already reused); a refusal says why, with the verifier's
/// log.
pub(crate) fn open_object(object: &[u8], pin_dir: Option<&Path>) -> Result<Object, DataPlaneError> {
    static PRINT: std::sync::Once = std::sync::Once::new();
    PRINT.call_once(|| {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, keep_libbpf_log)));
    });
    LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let loaded = (|| {
        let mut open = ObjectBuilder::default().open_memory(object)?;
        if let Some(dir) = pin_dir {
            for mut map in open.maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                // .rodata and friends are the object's own, never pinned.
                if name.starts_with("nemo_") {
                    map.set_pin_path(dir.join(&name))?;
                }
            }
        }
        open.load()
    })();
    loaded.map_err(|error| {
        let log = std::mem::take(&mut *LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner()));
        let tail = &log[log.len().saturating_sub(MAX_LOG)..];
        tracing::error!(%error, log = %tail, "the kernel refused nemo's BPF programs");
        // EPERM is this process's privileges, not the kernel's config.
        let privileges = if error.kind() == libbpf_rs::ErrorKind::PermissionDenied {
            " (not permitted: this process lacks CAP_BPF or CAP_NET_ADMIN, \
             which the packaged units give)"
        } else {
            ""
        };
        unavailable(format!(
            "loading the BPF programs: {error}{privileges}; libbpf and the verifier said:\n{tail}"
        ))
    })
}

/// A map of a loaded object, checked to have the key and value sizes the
/// Rust side writes.
pub(crate) fn object_map(
    object: &Object,
    name: &str,
    key: usize,
    value: usize,
) -> Result<MapHandle, DataPlaneError> {
    let map = object
        .maps()
        .find(|m| m.name() == name)
        .ok_or_else(|| unavailable(format!("the BPF object has no map {name}")))?;
    let (key_size, value_size) = (map.key_size() as usize, map.value_size() as usize);
    if key_size != key || value_size != value {
        return Err(unavailable(format!(
            "map {name}: key {key_size} and value {value_size} octets in the object, \
             {key} and {value} in the Rust mirror: the C header and its mirror disagree"
        )));
    }
    MapHandle::try_from(&map).map_err(|e| unavailable(format!("map {name}: {e}")))
}

/// A program's file descriptor (a duplicate, to attach it).
pub(crate) fn program_fd(object: &Object, name: &str) -> Result<OwnedFd, DataPlaneError> {
    object
        .progs()
        .find(|p| p.name() == name)
        .ok_or_else(|| unavailable(format!("the BPF object has no program {name}")))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| unavailable(format!("program {name}: {e}")))
}

/// Runs a program once on `packet` (BPF_PROG_TEST_RUN): its return code
/// and the packet as it left.
pub(crate) fn run_program(
    object: &Object,
    name: &str,
    packet: &[u8],
) -> Result<(u32, Vec<u8>), DataPlaneError> {
    let prog = object
        .progs_mut()
        .find(|p| p.name() == name)
        .ok_or_else(|| unavailable(format!("no program {name}")))?;
    let mut out = vec![0u8; packet.len() + 256];
    let input = libbpf_rs::ProgramInput {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let output = prog
        .test_run(input)
        .map_err(|e| unavailable(format!("test run of {name}: {e}")))?;
    Ok((
        output.return_value,
        output.data.map(|d| d.to_vec()).unwrap_or_default(),
    ))
}

/// A per-CPU counter's slot, summed over the CPUs.
pub(crate) fn percpu_sum(map: &MapHandle, slot: u32) -> u64 {
    map.lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map(|per_cpu| {
            per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum()
        })
        .unwrap_or(0)
}

/// Maps whose entries a restart need not keep (windows of copies, holds,
/// counters): a pin another version left with another layout is removed
/// before the load, which would refuse to reuse it (an upgrade would not
/// start). The bindings and the local address keep their layout.
fn drop_incompatible_pins(dir: &Path) {
    drop_incompatible(
        dir,
        &[
            (maps::ALSO, maps::PREFIX_SIZE, maps::SECOND_SIZE, None),
            (maps::HOLDS, 4, maps::HOLD_SIZE, None),
            (maps::LOCAL4, 4, maps::LOCAL_SIZE, Some(1)),
            (maps::COUNTERS, 4, 8, Some(Counter::ALL.len())),
        ],
    );
}

/// A transient map's name, key and value sizes and entries (`None`: any).
pub(crate) type TransientMap = (&'static str, usize, usize, Option<usize>);

/// Removes the pins of `transient` maps whose layout is not this
/// version's (their entries need not survive a restart).
pub(crate) fn drop_incompatible(dir: &Path, transient: &[TransientMap]) {
    for &(name, key, value, entries) in transient {
        let path = dir.join(name);
        let Ok(pinned) = MapHandle::from_pinned_path(&path) else {
            continue;
        };
        let fits = pinned.key_size() as usize == key
            && pinned.value_size() as usize == value
            && entries.is_none_or(|n| pinned.max_entries() as usize == n);
        if !fits {
            tracing::warn!(
                map = name,
                key_size = pinned.key_size(),
                value_size = pinned.value_size(),
                "a pinned map left by another version has another layout; removing its pin \
                 (it holds nothing a restart must keep)"
            );
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(map = name, %error, "could not remove the pin: the load will refuse it");
            }
        }
    }
}

/// Deletes every entry of a map.
fn clear(map: &MapHandle) {
    for key in map.keys().collect::<Vec<_>>() {
        let _ = map.delete(&key);
    }
}

/// The pin folder exists (created if missing) on a bpf filesystem.
fn check_pin_dir(dir: &Path) -> Result<(), DataPlaneError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| unavailable(format!("pin_dir {}: {e}", dir.display())))?;
    let stat = nix::sys::statfs::statfs(dir)
        .map_err(|e| unavailable(format!("pin_dir {}: {e}", dir.display())))?;
    if stat.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        return Err(unavailable(format!(
            "pin_dir {} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf; \
             `ip netns exec` hides the host's /sys/fs/bpf, so use a folder elsewhere there)",
            dir.display()
        )));
    }
    Ok(())
}

/// Whether this kernel runs the BPF data plane, found out by really doing
/// it: the programs loaded (the verifier accepts them), a route carrying
/// the encapsulation program installed, and (in a scratch namespace) the
/// decapsulation program attached at a tc ingress.
pub fn probe_bpf() -> Result<(), String> {
    use crate::linux::probe::{
        missing, probe_routes, ProbeRoute, LOOPBACK, PROBE_DESTINATION, PROBE_TABLE,
    };
    let programs = std::sync::Arc::new(
        Programs::load(None)
            .map_err(|e| missing("BPF programs", &e.to_string(), "CONFIG_BPF_SYSCALL"))?,
    );
    let fd = programs
        .fd(Program::EncapByDestination)
        .map_err(|e| e.to_string())?;
    let destination = ipnet::Ipv6Net::new(PROBE_DESTINATION, 64).map_err(|e| e.to_string())?;
    let route = routes::encap_route(
        destination,
        LOOPBACK,
        PROBE_TABLE,
        Program::EncapByDestination,
        fd.as_fd(),
    );
    let attach = programs.clone();
    let result = probe_routes(
        vec![ProbeRoute {
            message: route,
            what: "BPF lightweight tunnels",
            refused: "an `encap bpf xmit` route",
            option: "CONFIG_LWTUNNEL_BPF",
        }],
        Some(Box::new(move || {
            let decap = attach
                .fd(Program::DecapBySource)
                .map_err(|e| e.to_string())?;
            routes::attach_tc(routes::TcHook::Decap, LOOPBACK, decap.as_fd())
                .map_err(|e| missing("tc BPF filters", &e.to_string(), "CONFIG_NET_CLS_BPF"))
        })),
    );
    // The route held the descriptor's number only until it was installed.
    drop(fd);
    result
}

/// How many entries a pinned map of a running (or killed) daemon holds:
/// `pin_dir` is its `[dataplane] pin_dir`, `map` one of [`maps`]' names.
/// For operators' checks and tests.
pub fn pinned_entries(pin_dir: &Path, map: &str) -> Result<usize, DataPlaneError> {
    let handle = MapHandle::from_pinned_path(pin_dir.join(map))
        .map_err(|e| unavailable(format!("{}: {e}", pin_dir.join(map).display())))?;
    Ok(handle.keys().count())
}
