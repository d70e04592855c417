//! `nemo-mr`: the nemo mobile-router daemon. It hosts per-tenant mobile-router instances on a hypervisor.
//!
//! Only the command line exists so far; the daemon itself is issue #5.

use std::path::PathBuf;

use clap::Parser;

/// The nemo mobile-router daemon: it hosts per-tenant mobile-router instances on a hypervisor.
#[derive(Debug, Parser)]
#[command(name = "nemo-mr", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "nemo-mr {}: the daemon is not implemented yet (issue #5); config {} was not read",
        nemo::VERSION,
        args.config.display()
    )
}
