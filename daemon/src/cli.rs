//! The daemons' command line, their manual pages, and logging set up the
//! same way in each.

use std::io::IsTerminal;
use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

/// The command line every nemo daemon takes (flattened into each binary's
/// own `clap` parser, which gives the name and version).
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Check the configuration file (and what it names on this host) and
    /// exit.
    #[arg(long)]
    pub check: bool,
    /// Print this daemon's manual page (roff, for man(1)) and exit; needs
    /// no --config.
    #[arg(long, exclusive = true)]
    pub man_page: bool,
}

/// Where a manual page belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManSection {
    /// User commands, man(1): nemoctl.
    Commands,
    /// System administration, man(8): the daemons.
    Administration,
}

/// What a daemon's command line asked for.
#[derive(Debug)]
pub enum Invocation<A> {
    /// `--man-page`: the page is printed, nothing else is to be done.
    ManPagePrinted,
    /// Run with these arguments; logging is set up.
    Run(A),
}

/// How every daemon starts: `--man-page` answered before the rest is
/// parsed (the rest requires --config), then the command line `A` parsed
/// and logging set up as `daemon(&args).log_json` says.
pub fn start<A: clap::Parser>(
    daemon: impl Fn(&A) -> &DaemonArgs,
) -> std::io::Result<Invocation<A>> {
    if wants_man_page() {
        print_man_page(A::command(), ManSection::Administration)?;
        return Ok(Invocation::ManPagePrinted);
    }
    let args = A::parse();
    init_logging(daemon(&args).log_json);
    Ok(Invocation::Run(args))
}

/// Whether the command line asks for the manual page (`--man-page`), which
/// a daemon answers before it parses the rest (whose --config is required).
pub fn wants_man_page() -> bool {
    std::env::args_os().skip(1).any(|arg| arg == "--man-page")
}

/// Writes the manual page of `command` (a binary's whole clap definition)
/// to stdout, as roff: what `--man-page` and `nemoctl man` print, and the
/// packages install.
pub fn print_man_page(command: clap::Command, section: ManSection) -> std::io::Result<()> {
    use std::io::Write;
    // Into memory first: a closed pipe is an error, not a panic.
    let mut page = Vec::new();
    let section = match section {
        ManSection::Commands => "1",
        ManSection::Administration => "8",
    };
    clap_mangen::Man::new(command)
        .section(section)
        .render(&mut page)?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&page)?;
    stdout.flush()
}

/// Logs to stderr (stdout is for the ready line), as text or JSON lines,
/// filtered by RUST_LOG (default info).
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}
