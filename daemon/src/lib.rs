//! What nemo's daemons share, a concern a module: configuration files whose
//! errors name the line and the checks of their settings (`config`), the
//! command line, manual pages and logging (`cli`), the link to the
//! controller (`controller_link`) and the daemons' changes made once
//! through it (`request_ids`), the HTTP endpoint Prometheus scrapes
//! (`metrics_server`, [`exposition`]), UDP sockets (`udp`), the gRPC
//! servers ([`serving`], [`incoming`]) and their bearer tokens ([`bearer`]), the durable tables they keep their
//! state in ([`disk`]), times ([`clock`]) and secrets ([`secret`]). The
//! items of the private modules are re-exported here.

pub mod bearer;
mod cli;
pub mod clock;
mod config;
mod controller_link;
pub mod disk;
pub mod exposition;
pub mod incoming;
mod metrics_server;
mod request_ids;
pub mod secret;
pub mod serving;
mod udp;

pub use cli::{
    init_logging, print_man_page, start, wants_man_page, DaemonArgs, Invocation, ManSection,
};
pub use config::{
    check_endpoint, check_interface, check_readable, parse_hex_key, publish_packet_counters,
    read_token, AdminSection, BackendLabel, ConfigError, ConfigText, ListenSection,
    PacketCounterLabel, SettingError, MIN_ADMIN_TOKEN,
};
pub use controller_link::{
    authorized, controller_channel, Backoff, ChannelError, ControllerLink, Endpoints, Watched,
    CONNECT_TIMEOUT, MOST_ENDPOINTS,
};
pub use metrics_server::{serve_metrics, MAX_METRICS_CONNECTIONS};
pub use request_ids::{fresh_request_id, worth_sending_again, CallError, MOST_ATTEMPTS};
pub use udp::{udp_socket, DEFAULT_UDP_RECEIVE_BUFFER};
