//! `nemo-controller`: the nemo controller. It allocates tenant prefixes and tells the daemons what concerns them.
//!
//! Only the command line exists so far; the daemon itself is issue #6.

use std::path::PathBuf;

use clap::Parser;

/// The nemo controller: it allocates tenant prefixes and tells the daemons what concerns them.
#[derive(Debug, Parser)]
#[command(name = "nemo-controller", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "nemo-controller {}: the daemon is not implemented yet (issue #6); config {} was not read",
        nemo::VERSION,
        args.config.display()
    )
}
