//! A data plane owned by a thread inside a namespace, driven by steps from
//! the test (the BPF data planes are not `Send` across namespaces): what
//! the BPF tests in namespaces share.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::mpsc;

use nemo_dataplane::bpf::maps::Counter;
use nemo_dataplane::bpf::{
    BpfHomeAgent, BpfHomeAgentConfig, BpfMobileRouter, BpfMobileRouterConfig,
};
use nemo_dataplane::{
    BindingRoutes, HomeAgentDataPlane, MobileRouterDataPlane, ReconcileReport, TenantRoutes,
    Traffic,
};
use nemo_testkit::{addr, net, Netns};

/// The prefixes one route carries to a home agent's program.
pub const POOL: &str = "2001:db8:100::/40";

/// Which data plane a thread owns: a home agent's (uplink h1) or a mobile
/// router's (uplink u0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    HomeAgent,
    MobileRouter,
}

/// Work for the thread that owns a data plane inside a namespace.
pub enum Step {
    Set(BindingRoutes, Option<BindingRoutes>),
    Bicast(BindingRoutes),
    EndBicast(BindingRoutes),
    BicastHeard(BindingRoutes),
    Reconcile(Vec<BindingRoutes>),
    Attach(TenantRoutes),
    Deliver(TenantRoutes, Traffic),
    Counter(Counter),
    RemoveAll,
}

pub enum Answer {
    Done,
    Report(ReconcileReport),
    Count(u64),
    Heard(Option<std::time::Duration>),
}

pub type Steps = mpsc::Sender<(Step, mpsc::Sender<Result<Answer, String>>)>;

enum Plane {
    HomeAgent(BpfHomeAgent),
    MobileRouter(BpfMobileRouter),
}

/// Starts a data plane in `ns`; dropping the returned sender ends it
/// without a teardown (what `kill -9` leaves: routes, filter and pins).
pub fn data_plane(
    ns: &Netns,
    role: Role,
    local: &str,
    local_ipv4: Option<SocketAddrV4>,
    pin_dir: PathBuf,
) -> (Steps, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<(Step, mpsc::Sender<Result<Answer, String>>)>();
    let local = addr(local);
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = ns.spawn_in(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            let plane = if role == Role::HomeAgent {
                BpfHomeAgent::new(
                    handle,
                    BpfHomeAgentConfig {
                        uplink: "h1".into(),
                        local_address: local,
                        local_ipv4,
                        pin_dir: Some(pin_dir),
                        aggregates: vec![net(POOL)],
                    },
                )
                .await
                .map(Plane::HomeAgent)
            } else {
                BpfMobileRouter::new(
                    handle,
                    BpfMobileRouterConfig {
                        uplink: "u0".into(),
                        local_address: local,
                        pin_dir: Some(pin_dir),
                    },
                )
                .await
                .and_then(|plane| {
                    plane.programs().set_local4(local_ipv4)?;
                    Ok(plane)
                })
                .map(Plane::MobileRouter)
            };
            let plane = match plane {
                Ok(plane) => {
                    ready_tx.send(Ok(())).unwrap();
                    plane
                }
                Err(error) => {
                    ready_tx.send(Err(error.to_string())).unwrap();
                    return;
                }
            };
            while let Ok((step, reply)) = rx.recv() {
                let result = match (&plane, step) {
                    (Plane::HomeAgent(p), Step::Set(routes, previous)) => p
                        .set(&routes, previous.as_ref())
                        .await
                        .map(|()| Answer::Done),
                    (Plane::HomeAgent(p), Step::Bicast(second)) => {
                        p.bicast(&second).await.map(|copying| {
                            assert!(copying, "the bpf data plane copies");
                            Answer::Done
                        })
                    }
                    (Plane::HomeAgent(p), Step::EndBicast(second)) => {
                        p.end_bicast(&second).await.map(|()| Answer::Done)
                    }
                    (Plane::HomeAgent(p), Step::BicastHeard(second)) => {
                        Ok(Answer::Heard(p.bicast_heard(&second).await))
                    }
                    (Plane::HomeAgent(p), Step::Reconcile(all)) => {
                        p.reconcile(&all).await.map(Answer::Report)
                    }
                    (Plane::HomeAgent(p), Step::Counter(c)) => Ok(Answer::Count(p.counter(c))),
                    (Plane::HomeAgent(p), Step::RemoveAll) => {
                        p.teardown().await.map(|()| Answer::Done)
                    }
                    (Plane::MobileRouter(p), Step::Attach(tenant)) => {
                        p.attach(&tenant, None).await.map(|()| Answer::Done)
                    }
                    (Plane::MobileRouter(p), Step::Deliver(tenant, traffic)) => {
                        p.deliver(&tenant, traffic).await.map(|held| {
                            assert!(held, "the bpf data plane holds");
                            Answer::Done
                        })
                    }
                    (Plane::MobileRouter(p), Step::Counter(c)) => {
                        Ok(Answer::Count(p.programs().counter(c)))
                    }
                    (Plane::MobileRouter(p), Step::RemoveAll) => {
                        MobileRouterDataPlane::remove_all(p)
                            .await
                            .map(|()| Answer::Done)
                    }
                    _ => panic!("step not for this data plane"),
                };
                reply.send(result.map_err(|e| e.to_string())).unwrap();
            }
        });
    });
    ready_rx.recv().unwrap().unwrap();
    (tx, thread)
}

pub fn step(plane: &Steps, step: Step) -> Answer {
    let (tx, rx) = mpsc::channel();
    plane.send((step, tx)).unwrap();
    rx.recv().unwrap().unwrap()
}

pub fn count(plane: &Steps, counter: Counter) -> u64 {
    match step(plane, Step::Counter(counter)) {
        Answer::Count(n) => n,
        _ => unreachable!(),
    }
}
