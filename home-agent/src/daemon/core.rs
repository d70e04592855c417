//! The core task: owns the engine and the authorizations; for each packet
//! it decides (through `nemo::ha`), programs forwarding before anything is
//! acknowledged, frames the reply and hands both to the writer.

use super::*;

/// Where a reply goes inside its packet (RFC 6275 §6.4, §9.5.4): a Binding
/// Acknowledgement or Refresh Request carries the home address in a type 2
/// routing header; a Binding Error goes plainly to the packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// To the care-of address, with the home address in a type 2 routing
    /// header.
    ViaType2RoutingHeader,
    /// To the source only.
    Plain,
}

pub(super) fn routes(binding: &Binding) -> BindingRoutes {
    BindingRoutes {
        home_address: binding.home_address,
        care_of: binding.care_of,
        prefixes: binding.prefixes.clone(),
    }
}

fn decode_reason(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::TrailingBytes { .. } => "trailing_bytes",
        DecodeError::LengthMismatch { .. } => "length_mismatch",
        DecodeError::MessageTooShort { .. } => "message_too_short",
        DecodeError::OptionOverrun { .. } => "option_overrun",
        DecodeError::BadOptionLength { .. } => "bad_option_length",
        DecodeError::NotMobility(_) => "not_mobility",
        DecodeError::BadExtensionHeader { .. } => "bad_extension_header",
    }
}

/// The core: owns the engine.
pub struct Core<D> {
    pub(super) engine: HomeAgent,
    pub(super) authorizations: AuthorizationTable,
    pub(super) dataplane: Arc<D>,
    pub(super) writer: mpsc::Sender<Pending>,
    pub(super) metrics: Arc<Metrics>,
    /// Where each home address was last answered from and to, for Binding
    /// Refresh Requests.
    pub(super) last_path: HashMap<Ipv6Addr, (ReplyPath, Ipv6Addr)>,
}

impl<D> std::fmt::Debug for Core<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("bindings", &self.engine.len())
            .finish_non_exhaustive()
    }
}

impl<D: HomeAgentDataPlane> Core<D> {
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<CoreEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                        tokio::time::sleep(wait).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(CoreEvent::Packet { bytes, path, received_at }) => {
                        self.packet(&bytes, path, received_at).await;
                    }
                    Some(CoreEvent::Delete { home_address, respond }) => {
                        self.delete(home_address, respond).await;
                    }
                    Some(CoreEvent::Authorize { home_address, authorization }) => {
                        self.authorize(home_address, authorization);
                    }
                    None => break,
                },
                () = sleep => self.timers().await,
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("core stopped");
    }

    async fn packet(&mut self, bytes: &[u8], path: ReplyPath, received_at: Instant) {
        let parsed = match parse_packet(bytes) {
            Ok(parsed) => parsed,
            Err(error) => {
                Metrics::count(&self.metrics.malformed, decode_reason(&error));
                tracing::debug!(%error, "malformed packet");
                return;
            }
        };
        if !parsed.checksum_ok() {
            Metrics::count(&self.metrics.malformed, "checksum");
            tracing::debug!(source = %parsed.repr.source, "bad Mobility Header checksum");
            return;
        }
        let header = match MobilityHeader::decode(parsed.mh) {
            Ok(header) => header,
            Err(error) => {
                Metrics::count(&self.metrics.malformed, decode_reason(&error));
                tracing::debug!(%error, source = %parsed.repr.source, "malformed Mobility Header");
                return;
            }
        };
        let received = Received {
            mh: parsed.mh,
            source: parsed.repr.source,
            home_address: parsed.repr.home_address_option.map(|hao| hao.home_address),
        };
        // The answer leaves from the address the message was sent to.
        let local = parsed.repr.destination;
        let now = SystemTime::now();
        let mut outcome = self
            .engine
            .process(received, &header, now, &self.authorizations);
        if let Outcome::Acknowledge {
            change: Some(change),
            ..
        } = &outcome
        {
            if let Err(error) = self.forward(change).await {
                self.metrics.forwarding_failures.inc();
                tracing::error!(%error, "forwarding failed; refusing the registration");
                outcome = self.engine.forwarding_failed(
                    change,
                    received,
                    &header,
                    now,
                    &self.authorizations,
                );
            }
        }
        match outcome {
            Outcome::Drop(reason) => {
                Metrics::count(&self.metrics.dropped, reason.name());
                tracing::debug!(reason = reason.name(), source = %received.source, "dropped");
            }
            Outcome::BindingError { reply, status } => {
                self.metrics.binding_errors.inc();
                tracing::debug!(%status, to = %reply.care_of, "binding error");
                let packet = frame(&reply, local, Addressing::Plain);
                self.queue(Pending::Send(Outgoing { packet, path })).await;
            }
            Outcome::Acknowledge {
                reply,
                status,
                change,
            } => {
                // A refresh (same care-of address and prefixes) is routine:
                // at tens of thousands a second, an info line each would
                // flood the log. New bindings, moves, removals and
                // rejections stay at info.
                let refresh = matches!(
                    &change,
                    Some(Change::Upsert { binding, previous: Some(previous) })
                        if previous.care_of == binding.care_of && previous.prefixes == binding.prefixes
                );
                if refresh {
                    tracing::debug!(
                        home_address = %reply.home_address,
                        care_of = %reply.care_of,
                        %status,
                        "binding refreshed"
                    );
                } else {
                    tracing::info!(
                        home_address = %reply.home_address,
                        care_of = %reply.care_of,
                        %status,
                        "binding update"
                    );
                }
                if status.is_accepted() {
                    self.last_path
                        .insert(reply.home_address, (path.clone(), local));
                }
                let reason = match &change {
                    Some(Change::Remove { .. }) => "deregistration",
                    _ => "registration",
                };
                let packet = frame(&reply, local, Addressing::ViaType2RoutingHeader);
                self.queue(Pending::Acknowledge {
                    change: change.map(|c| (c, reason)),
                    reply: Outgoing { packet, path },
                    status,
                    received_at,
                })
                .await;
            }
        }
    }

    async fn forward(&self, change: &Change) -> Result<(), nemo_dataplane::DataPlaneError> {
        match change {
            Change::Upsert { binding, previous } => {
                let previous = previous.as_ref().map(routes);
                self.dataplane
                    .set(&routes(binding), previous.as_ref())
                    .await
            }
            Change::Remove { binding } => self.dataplane.clear(&routes(binding)).await,
        }
    }

    /// Removes forwarding for a change that cannot be refused (expiry, an
    /// operator's delete): a failure is logged and counted, reconciliation
    /// at the next start cleans up.
    async fn unforward(&self, change: &Change) {
        if let Err(error) = self.forward(change).await {
            self.metrics.forwarding_failures.inc();
            tracing::error!(%error, "removing forwarding failed");
        }
    }

    async fn timers(&mut self) {
        let now = SystemTime::now();
        for reply in self.engine.refresh_requests(now, &self.authorizations) {
            let Some((path, local)) = self.last_path.get(&reply.home_address).cloned() else {
                continue;
            };
            self.metrics.refresh_requests.inc();
            let packet = frame(&reply, local, Addressing::ViaType2RoutingHeader);
            self.queue(Pending::Send(Outgoing { packet, path })).await;
        }
        for change in self.engine.expire(now) {
            self.metrics.expired.inc();
            if let Change::Remove { binding } = &change {
                tracing::info!(home_address = %binding.home_address, "binding expired");
                self.last_path.remove(&binding.home_address);
            }
            self.unforward(&change).await;
            self.queue(Pending::Expire(change)).await;
        }
    }

    /// Applies an authorization change. A revoked home address keeps its
    /// binding until it expires or deregisters (its next Binding Update is
    /// dropped for want of a security association); an operator can delete
    /// it at once.
    fn authorize(
        &mut self,
        home_address: Ipv6Addr,
        authorization: Option<nemo::ha::Authorization>,
    ) {
        match authorization {
            Some(entry) => match self.authorizations.insert(entry) {
                Ok(()) => tracing::info!(%home_address, "authorization updated"),
                Err(error) => tracing::error!(%home_address, %error, "authorization refused"),
            },
            None => {
                if self.authorizations.remove(home_address).is_some() {
                    tracing::info!(%home_address, "authorization revoked");
                }
            }
        }
    }

    async fn delete(&mut self, home_address: Ipv6Addr, respond: oneshot::Sender<Option<Binding>>) {
        let Some(change) = self.engine.remove(home_address) else {
            let _ = respond.send(None);
            return;
        };
        tracing::info!(%home_address, "binding deleted by operator");
        self.last_path.remove(&home_address);
        self.unforward(&change).await;
        self.queue(Pending::Remove { change, respond }).await;
    }

    async fn queue(&self, pending: Pending) {
        if self.writer.send(pending).await.is_err() {
            tracing::error!("writer stopped; answer not sent");
        }
    }
}

/// Frames an engine reply as an IPv6 packet from `local`.
fn frame(reply: &Reply, local: Ipv6Addr, addressing: Addressing) -> Vec<u8> {
    let repr = PacketRepr {
        source: local,
        destination: reply.care_of,
        hop_limit: 64,
        type2_routing: (addressing == Addressing::ViaType2RoutingHeader).then_some(
            Type2RoutingHeader {
                home_address: reply.home_address,
            },
        ),
        home_address_option: None,
    };
    build_packet(&repr, &reply.mh)
}
