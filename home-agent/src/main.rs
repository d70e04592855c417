//! `nemo-ha`: the nemo home agent. It keeps the NEMO binding cache and steers tenant prefixes.
//!
//! Only the command line exists so far; the daemon itself is issue #4.

use std::path::PathBuf;

use clap::Parser;

/// The nemo home agent: it keeps the NEMO binding cache and steers tenant prefixes.
#[derive(Debug, Parser)]
#[command(name = "nemo-ha", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "nemo-ha {}: the daemon is not implemented yet (issue #4); config {} was not read",
        nemo::VERSION,
        args.config.display()
    )
}
