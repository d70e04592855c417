//! `nemo-delay-relay`: the WAN between the lab's sites for control traffic. A
//! UDP relay that adds a fixed delay each way (20 ms each way for the seed's
//! 40 ms round trip) between mobile routers and a home agent.
//!
//! ```sh
//! nemo-delay-relay --listen '[2001:db8:1::fe]:4192' --upstream '[2001:db8:1::1]:4191' --one-way-ms 20
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use nemo_testkit::relay::{start, RelaySettings};

#[derive(Debug, Parser)]
#[command(name = "nemo-delay-relay", version)]
struct Args {
    /// Address the mobile routers send to.
    #[arg(long)]
    listen: SocketAddr,
    /// The home agent's UDP address.
    #[arg(long)]
    upstream: SocketAddr,
    /// Delay added in each direction, in milliseconds.
    #[arg(long, default_value_t = 20)]
    one_way_ms: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let settings = RelaySettings {
        one_way_delay: Duration::from_millis(args.one_way_ms),
        lose_first_answers: 0,
    };
    let address = start(args.listen, args.upstream, settings)?;
    // The ready line, as the daemons print one.
    println!(
        "nemo-delay-relay ready listen={address} upstream={} one_way_ms={}",
        args.upstream, args.one_way_ms
    );
    loop {
        std::thread::park();
    }
}
