//! Configuration files whose errors name the file and line, and the checks
//! of the settings they hold (endpoints, interfaces, files, keys).

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration error, with the file and line it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the schema: the message names line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A configuration file's text and path, to parse it and to name lines in
/// errors about it.
#[derive(Debug, Clone)]
pub struct ConfigText {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl ConfigText {
    /// Reads a file.
    pub fn read(path: &Path) -> Result<ConfigText, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(ConfigText {
            path: path.to_owned(),
            text,
        })
    }

    /// Text that did not come from a file (tests).
    pub fn new(text: &str, path: &Path) -> ConfigText {
        ConfigText {
            path: path.to_owned(),
            text: text.to_owned(),
        }
    }

    /// Parses the TOML into `T` (which should deny unknown fields).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| ConfigError::Parse {
            path: self.path.clone(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// The error for a value at `span` (from `toml::Spanned`).
    pub fn invalid(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line: self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
            message: message.into(),
        }
    }
}

/// A config section with one listen address (`[admin]`, `[metrics]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Address and port.
    pub listen: std::net::SocketAddr,
}

/// `[admin]`: where a daemon's admin API listens, and the file holding
/// the bearer token every call to it must carry. The API changes state
/// (deletes bindings, hands the active role over, re-registers), so a
/// listen address off loopback needs a token.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address and port.
    pub listen: toml::Spanned<std::net::SocketAddr>,
    /// A file holding the token (16 characters or more).
    #[serde(default)]
    pub token_file: Option<toml::Spanned<PathBuf>>,
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 16;

impl AdminSection {
    /// Checks the section as written: off loopback, a token file is
    /// needed.
    pub fn validate(&self, file: &ConfigText) -> Result<(), ConfigError> {
        if !self.listen.get_ref().ip().is_loopback() && self.token_file.is_none() {
            return Err(file.invalid(
                self.listen.span(),
                "admin: listen: off loopback the admin API needs a token_file (it deletes \
                 bindings and hands the active role over)",
            ));
        }
        Ok(())
    }

    /// Reads the token, if one is configured (at start and `--check`).
    pub fn token(&self, file: &ConfigText) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let token = read_token(path.get_ref())
            .map_err(|e| file.invalid(path.span(), format!("admin: token_file: {e}")))?;
        if token.len() < MIN_ADMIN_TOKEN {
            return Err(file.invalid(
                path.span(),
                format!(
                    "admin: token_file: the token must be at least {MIN_ADMIN_TOKEN} characters"
                ),
            ));
        }
        Ok(Some(token))
    }
}

/// The label of both daemons' `dataplane_backend` gauge: the backend that
/// runs (`bpf`, `seg6` or `memory`), set to 1.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend's name.
    pub backend: String,
}

/// The label of both daemons' `dataplane_packets` gauge: one of the BPF
/// programs' counters (`encapsulated`, `decap_spoofed`, `bicast_copied`,
/// `held`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PacketCounterLabel {
    /// The counter's name.
    pub counter: String,
}

/// Publishes the data plane's packet counters (`read`: the BPF programs')
/// into `family` every second; returns at once where there are none (a
/// backend that does not count).
pub async fn publish_packet_counters(
    read: impl Fn() -> Vec<(&'static str, u64)>,
    family: prometheus_client::metrics::family::Family<
        PacketCounterLabel,
        prometheus_client::metrics::gauge::Gauge,
    >,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let counters = read();
        if counters.is_empty() {
            return;
        }
        for (name, value) in counters {
            family
                .get_or_create(&PacketCounterLabel {
                    counter: name.to_owned(),
                })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
}

/// Why a setting does not hold on this host.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// Not a URL.
    #[error("{0:?} is not a URL like http://[2001:db8::1]:50051")]
    NotAUrl(String),
    /// A URL without a scheme.
    #[error("{0:?} has no scheme; did you mean http://{0}?")]
    NoScheme(String),
    /// A scheme other than http or https.
    #[error("{url:?}: scheme {scheme:?} is neither http nor https")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A URL without a host.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A URL with a path or a query.
    #[error("{0:?}: a gRPC endpoint has no path or query")]
    PathOrQuery(String),
    /// No such network interface.
    #[error("no network interface {0:?} on this host")]
    NoInterface(String),
    /// A file that cannot be read.
    #[error("{path}: {source}")]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key that is not hex.
    #[error("key must be hex digits, two per octet")]
    NotHex,
    /// No endpoints, or too many.
    #[error("{0} endpoints; give 1 to 16")]
    EndpointCount(usize),
}

/// Checks a controller endpoint: an `http://` or `https://` URL with a
/// host (and usually a port), nothing else.
pub fn check_endpoint(text: &str) -> Result<(), SettingError> {
    let uri: tonic::codegen::http::Uri = text
        .parse()
        .map_err(|_| SettingError::NotAUrl(text.to_owned()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(SettingError::Scheme {
                url: text.to_owned(),
                scheme: other.to_owned(),
            })
        }
        None => return Err(SettingError::NoScheme(text.to_owned())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(SettingError::NoHost(text.to_owned()));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(SettingError::PathOrQuery(text.to_owned()));
    }
    Ok(())
}

/// Checks that a network interface exists on this host (its entry in
/// /sys/class/net).
pub fn check_interface(name: &str) -> Result<(), SettingError> {
    let plausible = !name.is_empty() && name.len() <= 15 && !name.contains(['/', '\0']);
    if plausible && Path::new("/sys/class/net").join(name).exists() {
        Ok(())
    } else {
        Err(SettingError::NoInterface(name.to_owned()))
    }
}

/// Reads a bearer-token file: its content without surrounding white space.
/// A file that group or others may read is warned about
/// ([`crate::secret::warn_if_exposed`]).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    crate::secret::warn_if_exposed(path);
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Checks that a file can be read (a token file, a key).
pub fn check_readable(path: &Path) -> Result<(), SettingError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| SettingError::Unreadable {
            path: path.to_owned(),
            source,
        })
}

/// A key written in hex, two digits per octet.
pub fn parse_hex_key(hex: &str) -> Result<Vec<u8>, SettingError> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SettingError::NotHex);
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| SettingError::NotHex))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        for good in [
            "http://[2001:db8::1]:50051",
            "https://controller.example:443",
            "http://[::1]:50051/",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("htp://[::1]:50051", "scheme"),
            ("not a url", "not a URL"),
            ("[::1]:50051", "scheme"),
            ("http://[::1]:50051/nemo.v1", "path"),
        ] {
            let error = check_endpoint(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn interfaces_and_files_are_looked_up() {
        assert!(check_interface("lo").is_ok());
        assert!(check_interface("nemo-none0").is_err());
        assert!(check_interface("../lo").is_err());
        assert!(check_readable(Path::new("/nonexistent/token")).is_err());
    }

    #[test]
    fn lines_are_counted_from_one() {
        let text = ConfigText::new("a = 1\nb = 2\nc = 3\n", Path::new("x.toml"));
        let at = text.text.find("c =").unwrap();
        assert_eq!(text.invalid(at..at + 1, "bad").to_string(), "x.toml:3: bad");
    }

    #[test]
    fn hex_keys() {
        assert_eq!(parse_hex_key("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(parse_hex_key("0").is_err());
        assert!(parse_hex_key("zz").is_err());
    }
}
