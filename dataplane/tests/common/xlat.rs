//! A translator owned by a thread inside a namespace (its BPF object is
//! the thread's): its device, the pool and translation prefix routed to
//! it, mappings applied; orders from the test until it ends.

use std::sync::mpsc;

use nemo_dataplane::bpf::translator::{Mapping, Translator, XlatConfig, XlatCounter};
use nemo_dataplane::xlat;
use nemo_testkit::Netns;

/// What the test asks of the translator's thread.
pub enum Order {
    Unmap(Mapping),
    Count(XlatCounter),
}

/// The running translator; its thread ends when this is dropped.
pub struct RunningTranslator {
    orders: Option<mpsc::Sender<(Order, mpsc::Sender<u64>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningTranslator {
    /// Sends an order and waits for its answer.
    pub fn ask(&self, order: Order) -> u64 {
        let (tx, rx) = mpsc::channel();
        self.orders.as_ref().unwrap().send((order, tx)).unwrap();
        rx.recv().unwrap()
    }
}

impl Drop for RunningTranslator {
    fn drop(&mut self) {
        self.orders.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a translator in `ns`: `pool` and `prefix` routed to its device,
/// `mappings` applied, ICMPv6 errors from no mapping sent from
/// `icmp_source` (RFC 6791), the common case translated at arrival on the
/// interfaces `arrival`; panics with the reason when it cannot start.
pub fn translator(
    ns: &Netns,
    pool: &str,
    prefix: &str,
    mappings: Vec<Mapping>,
    icmp_source: Option<std::net::Ipv4Addr>,
    arrival: &[&'static str],
) -> RunningTranslator {
    let arrival = arrival.to_vec();
    let (orders, inbox) = mpsc::channel::<(Order, mpsc::Sender<u64>)>();
    let (ready_tx, ready) = mpsc::channel();
    let (pool, prefix) = (pool.parse().unwrap(), prefix.parse().unwrap());
    let thread = ns.spawn_in(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            let setup = async {
                let (device, _) = xlat::ensure_device(&handle).await?;
                xlat::route_pool(&handle, device, pool, xlat::LOWEST_IPV6_MTU).await?;
                xlat::route_translation_prefix(&handle, device, prefix).await?;
                let translator = Translator::load(None)?;
                translator.configure(&XlatConfig {
                    icmp_source,
                    ..XlatConfig::default()
                })?;
                translator.attach(device)?;
                for name in arrival {
                    let index = nemo_dataplane::addresses::interface_index(&handle, name).await?;
                    translator.attach_at_arrival(index)?;
                }
                translator.add_translation_prefix(prefix)?;
                for mapping in &mappings {
                    translator.map(mapping)?;
                }
                Ok::<_, nemo_dataplane::DataPlaneError>(translator)
            };
            let translator = match setup.await {
                Ok(translator) => {
                    ready_tx.send(Ok(())).unwrap();
                    translator
                }
                Err(error) => {
                    ready_tx.send(Err(error.to_string())).unwrap();
                    return;
                }
            };
            while let Ok((order, answer)) = inbox.recv() {
                let value = match order {
                    Order::Unmap(mapping) => {
                        translator.unmap(&mapping).unwrap();
                        0
                    }
                    Order::Count(counter) => translator.counter(counter),
                };
                let _ = answer.send(value);
            }
        })
    });
    ready.recv().unwrap().unwrap();
    RunningTranslator {
        orders: Some(orders),
        thread: Some(thread),
    }
}
