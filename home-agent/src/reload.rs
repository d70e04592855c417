//! SIGHUP: the home agent re-reads its configuration's static
//! authorizations (`[[mobile_router]]`) and applies what changed, without
//! a restart and without touching the controller's authorizations. Every
//! other setting takes effect at the next start.
//!
//! A file that does not load (it names the line) or whose entries collide
//! with the controller's (the same home address, SPI or prefix: the check
//! the start makes) is refused whole: the running authorizations stay.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nemo::ha::{Authorization, AuthorizationTable};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::authorization_cache::AuthorizationCache;
use crate::config::Config;
use crate::messages::CoreEvent;

/// What a reload applies: every static entry of the file (the core keeps
/// an identical one as it is), and the home addresses no longer in it.
#[derive(Debug, PartialEq)]
pub struct Reload {
    /// The file's static authorizations.
    pub authorized: Vec<Authorization>,
    /// Static home addresses of the running set the file no longer names.
    pub withdrawn: Vec<Ipv6Addr>,
}

/// Reads `config` and plans the change from the running static set
/// `running`; `controller_cache` holds the controller's authorizations,
/// which static entries must not collide with.
pub fn plan(
    config: &Path,
    running: &BTreeSet<Ipv6Addr>,
    controller_cache: Option<&AuthorizationCache>,
) -> anyhow::Result<Reload> {
    let mut table = Config::load(config)?.authorizations;
    let authorized: Vec<Authorization> = table.iter().cloned().collect();
    if let Some(cache) = controller_cache {
        cache.for_each(|entry| {
            if table.get(entry.home_address).is_some() {
                anyhow::bail!(
                    "home address {} is the controller's; a static entry may not name it",
                    entry.home_address
                );
            }
            table
                .insert(entry)
                .context("a static entry collides with the controller's")
        })?;
    }
    let named: BTreeSet<Ipv6Addr> = authorized.iter().map(|a| a.home_address).collect();
    Ok(Reload {
        withdrawn: running.difference(&named).copied().collect(),
        authorized,
    })
}

/// The SIGHUP handler, installed before the daemon says it is ready (the
/// signal's default action would end it).
#[derive(Debug)]
pub struct Hangups {
    signal: Signal,
    config: PathBuf,
    running: BTreeSet<Ipv6Addr>,
    controller_cache: Option<AuthorizationCache>,
}

impl Hangups {
    /// Installs the handler; `statics` are the static authorizations the
    /// daemon started with.
    pub fn install(
        config: PathBuf,
        statics: &AuthorizationTable,
        controller_cache: Option<AuthorizationCache>,
    ) -> std::io::Result<Hangups> {
        Ok(Hangups {
            signal: signal(SignalKind::hangup())?,
            config,
            running: statics.iter().map(|a| a.home_address).collect(),
            controller_cache,
        })
    }

    /// Applies each reload through the core, until the core stops.
    pub async fn run(mut self, core: mpsc::Sender<CoreEvent>) {
        while self.signal.recv().await.is_some() {
            let config = self.config.clone();
            let running = self.running.clone();
            let cache = self.controller_cache.clone();
            // A million entries take seconds to parse: off the runtime.
            let planned =
                tokio::task::spawn_blocking(move || plan(&config, &running, cache.as_ref()))
                    .await
                    .unwrap_or_else(|error| Err(anyhow::anyhow!("reload task failed: {error}")));
            let reload = match planned {
                Ok(reload) => reload,
                Err(error) => {
                    tracing::error!(
                        config = %self.config.display(),
                        error = format!("{error:#}"),
                        "reload refused; the running authorizations stay"
                    );
                    continue;
                }
            };
            let (authorized, withdrawn) = (reload.authorized.len(), reload.withdrawn.len());
            self.running = reload.authorized.iter().map(|a| a.home_address).collect();
            let events = reload
                .authorized
                .into_iter()
                .map(|a| CoreEvent::Authorize {
                    home_address: a.home_address,
                    authorization: Some(a),
                })
                .chain(
                    reload
                        .withdrawn
                        .into_iter()
                        .map(|home_address| CoreEvent::Authorize {
                            home_address,
                            authorization: None,
                        }),
                );
            for event in events {
                if core.send(event).await.is_err() {
                    return;
                }
            }
            tracing::info!(
                config = %self.config.display(),
                authorized,
                withdrawn,
                "reloaded the static authorizations (other settings take effect at the next start)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff";

    fn config(dir: &Path, entries: &[(&str, u32, &str)]) -> PathBuf {
        let mut text = format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n[store]\npath = \"{}\"\n\n\
             [dataplane]\nbackend = \"memory\"\n",
            dir.join("store").display()
        );
        for (home_address, spi, prefix) in entries {
            text.push_str(&format!(
                "\n[[mobile_router]]\nhome_address = \"{home_address}\"\nspi = {spi}\n\
                 key = \"{KEY}\"\nprefixes = [\"{prefix}\"]\n"
            ));
        }
        let path = dir.join("ha.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn controller_cache(
        dir: &Path,
        home_address: &str,
        spi: u32,
        prefix: &str,
    ) -> AuthorizationCache {
        let path = dir.join(format!("authorizations-{home_address}-{spi}.redb"));
        let cache = AuthorizationCache::open(&path).unwrap();
        let entry = Authorization {
            home_address: home_address.parse().unwrap(),
            security_associations: vec![nemo::auth::SecurityAssociation::new(
                spi,
                nemo::auth::Algorithm::HmacSha256,
                vec![7; 32],
            )
            .unwrap()],
            mobile_router: true,
            prefixes: vec![prefix.parse().unwrap()].into(),
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(cache.write(
                &[crate::authorization_cache::CacheChange::Put(entry)],
                Some(7),
            ))
            .unwrap();
        cache
    }

    #[test]
    fn a_reload_adds_and_withdraws_static_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), &[("2001:db8:1::2", 4002, "2001:db8:200::/56")]);
        let running = BTreeSet::from(["2001:db8:1::1".parse().unwrap()]);
        let reload = plan(&path, &running, None).unwrap();
        assert_eq!(reload.authorized.len(), 1);
        assert_eq!(
            reload.authorized[0].home_address.to_string(),
            "2001:db8:1::2"
        );
        assert_eq!(reload.withdrawn, Vec::from_iter(running));
    }

    #[test]
    fn a_static_entry_colliding_with_the_controllers_refuses_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), &[("2001:db8:1::2", 4002, "2001:db8:200::/56")]);
        for (home_address, spi, prefix, why) in [
            (
                "2001:db8:1::2",
                4009,
                "2001:db8:900::/56",
                "is the controller's",
            ),
            ("2001:db8:1::9", 4002, "2001:db8:900::/56", "collides"),
            ("2001:db8:1::9", 4009, "2001:db8:200::/60", "collides"),
        ] {
            let cache = controller_cache(dir.path(), home_address, spi, prefix);
            let error = plan(&path, &BTreeSet::new(), Some(&cache)).unwrap_err();
            assert!(format!("{error:#}").contains(why), "{error:#}");
        }
        let cache = controller_cache(dir.path(), "2001:db8:1::9", 4004009, "2001:db8:900::/56");
        assert!(plan(&path, &BTreeSet::new(), Some(&cache)).is_ok());
    }

    #[test]
    fn a_file_that_does_not_load_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), &[]);
        std::fs::write(&path, "[home_agent]\nhome_prefixes = 3\n").unwrap();
        let error = plan(&path, &BTreeSet::new(), None).unwrap_err();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
    }
}
