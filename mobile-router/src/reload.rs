//! SIGHUP: the daemon re-reads its configuration's static instances
//! (`[[instance]]`) and applies what changed: a new one registers, a
//! changed one registers again (its sequence kept), one no longer named
//! deregisters and goes. Instances the controller placed are not touched
//! (a static instance and a controller's tenant must not share a name).
//! Every other setting takes effect at the next start.
//!
//! A file that does not load (it names the line) is refused whole: the
//! running instances stay.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Config, Instance};
use crate::driver::InstanceCommand;

/// Reads `config` and turns it into commands from the running static
/// instances `running`: an upsert for each instance of the file (the
/// driver keeps an identical one as it is), a removal with deregistration
/// for each name the file no longer has.
pub fn plan(config: &Path, running: &BTreeSet<String>) -> anyhow::Result<Vec<InstanceCommand>> {
    let (_, instances) = Config::load(config)?;
    let named: BTreeSet<String> = instances.iter().map(|i| i.name.clone()).collect();
    let gone = running
        .difference(&named)
        .map(|name| InstanceCommand::Remove {
            name: name.clone(),
            deregister: true,
        });
    Ok(instances
        .into_iter()
        .map(InstanceCommand::Upsert)
        .chain(gone)
        .collect())
}

/// The SIGHUP handler, installed before the daemon says it is ready (the
/// signal's default action would end it).
#[derive(Debug)]
pub struct Hangups {
    signal: Signal,
    config: PathBuf,
    running: BTreeSet<String>,
}

impl Hangups {
    /// Installs the handler; `statics` are the instances the daemon
    /// started with.
    pub fn install(config: PathBuf, statics: &[Instance]) -> std::io::Result<Hangups> {
        Ok(Hangups {
            signal: signal(SignalKind::hangup())?,
            config,
            running: statics.iter().map(|i| i.name.clone()).collect(),
        })
    }

    /// Applies each reload through the driver, until it stops.
    pub async fn run(mut self, commands: mpsc::Sender<InstanceCommand>) {
        while self.signal.recv().await.is_some() {
            let planned = match plan(&self.config, &self.running) {
                Ok(planned) => planned,
                Err(error) => {
                    tracing::error!(
                        config = %self.config.display(),
                        error = format!("{error:#}"),
                        "reload refused; the running instances stay"
                    );
                    continue;
                }
            };
            self.running = planned
                .iter()
                .filter_map(|command| match command {
                    InstanceCommand::Upsert(instance) => Some(instance.name.clone()),
                    InstanceCommand::Remove { .. } => None,
                })
                .collect();
            let (instances, removed) = (self.running.len(), planned.len() - self.running.len());
            for command in planned {
                if commands.send(command).await.is_err() {
                    return;
                }
            }
            tracing::info!(
                config = %self.config.display(),
                instances,
                removed,
                "reloaded the static instances (other settings take effect at the next start)"
            );
        }
    }
}
