//! One router process: identity, next-hop table, XDP, workers and the admin
//! socket, started in that order and stopped in reverse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::core::NodeId;
use crate::core::identity::Identity;
use crate::core::table::TableError;
use crate::io::admin::{AdminError, AdminServer};
use crate::io::bpf::{BpfError, XdpCounters, XdpRouter};
use crate::io::control;
use crate::io::keyfile::{self, KeyError};
use crate::io::stats::{WorkerCounters, WorkerStats};
use crate::io::topology::SharedTable;
use crate::io::worker::{Worker, WorkerError};

/// How often the control loop checks for shutdown while idle.
const CONTROL_TICK: Duration = Duration::from_millis(100);

/// Why the router could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The neighbor list.
    #[error("neighbors in the config: {0}")]
    Table(#[from] TableError),
    /// XDP load or attach.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// A worker.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The admin socket.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// What `xorlay stats` prints.
#[derive(Debug, Clone, Serialize)]
pub struct RouterStats {
    /// This node.
    pub node_id: NodeId,
    /// Neighbors in the published table.
    pub neighbors: usize,
    /// Interfaces with XDP and the mode used.
    pub xdp_attached: Vec<(String, &'static str)>,
    /// XDP counters summed over CPUs (absent without XDP).
    pub xdp: Option<XdpCounters>,
    /// Sum over workers.
    pub total: WorkerCounters,
    /// Each worker.
    pub workers: Vec<WorkerCounters>,
}

/// A running router.
pub struct Router {
    identity: Identity,
    table: SharedTable,
    stop: Arc<AtomicBool>,
    workers: Vec<(Worker, Arc<WorkerStats>)>,
    xdp: Option<XdpRouter>,
    admin: Option<AdminServer>,
}

impl Router {
    /// Starts every plane. On error, whatever was started is stopped again
    /// (workers joined, XDP detached) before returning.
    pub fn start(config: &Config) -> Result<Router, RouterError> {
        let identity = keyfile::read(&config.key_file)?;
        let table = control::share(control::static_table(
            identity.node_id(),
            &config.listen,
            &config.neighbors,
        )?);
        let mut router = Router {
            identity,
            table,
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
            xdp: None,
            admin: None,
        };
        // From here on, an early return drops `router`, which stops what runs.
        if !config.interfaces.is_empty() {
            router.xdp = Some(XdpRouter::attach(
                &config.interfaces,
                config.listen.port(),
                config.xdp_mode,
            )?);
        } else {
            log::warn!(
                "no [underlay] interfaces configured: XDP is off, every packet takes the userspace path"
            );
        }
        let worker_config = config.worker_config();
        for index in 0..config.worker_count() {
            let stats = Arc::new(WorkerStats::default());
            let worker = Worker::spawn(
                index,
                &worker_config,
                router.table.clone(),
                stats.clone(),
                router.stop.clone(),
            )?;
            router.workers.push((worker, stats));
        }
        // Last: a reachable admin socket means the router is fully up.
        router.admin = Some(AdminServer::bind(&config.admin_socket)?);
        log::info!(
            "xorlay {} up: {} worker(s) on {}, {} neighbor(s), XDP on {:?}",
            router.identity.node_id(),
            router.workers.len(),
            config.listen,
            router.table.load().len(),
            router
                .xdp
                .as_ref()
                .map(|x| x.attached())
                .unwrap_or_default(),
        );
        Ok(router)
    }

    /// This node's ID.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Current counters of every plane.
    pub fn stats(&self) -> RouterStats {
        let workers: Vec<WorkerCounters> = self.workers.iter().map(|(_, s)| s.snapshot()).collect();
        let mut total = WorkerCounters::default();
        for w in &workers {
            total += *w;
        }
        let xdp = self.xdp.as_ref().and_then(|x| match x.counters() {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("reading XDP counters: {e}");
                None
            }
        });
        RouterStats {
            node_id: self.identity.node_id(),
            neighbors: self.table.load().len(),
            xdp_attached: self.xdp.as_ref().map(|x| x.attached()).unwrap_or_default(),
            xdp,
            total,
            workers,
        }
    }

    /// The control loop: serves the admin socket until `shutdown` is set.
    pub fn run_until(&mut self, shutdown: &AtomicBool) {
        while !shutdown.load(Ordering::Relaxed) {
            match &self.admin {
                Some(admin) => {
                    admin.serve_for(CONTROL_TICK, |request| match request {
                        // Read at request time: counters are never older than the last batch.
                        "stats" => serde_json::to_string(&self.stats())
                            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
                        other => serde_json::json!({
                            "error": format!("unknown request {other:?}; known: stats")
                        })
                        .to_string(),
                    });
                }
                None => std::thread::sleep(CONTROL_TICK),
            }
        }
    }

    /// Stops the workers, detaches XDP and removes the admin socket.
    pub fn shutdown(mut self) -> Result<(), RouterError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), RouterError> {
        self.admin = None;
        self.stop.store(true, Ordering::Relaxed);
        let mut first_error = None;
        for (worker, _) in self.workers.drain(..) {
            if let Err(e) = worker.join() {
                log::error!("worker: {e}");
                first_error.get_or_insert(RouterError::Worker(e));
            }
        }
        if let Some(xdp) = self.xdp.take() {
            xdp.detach();
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            log::error!("stopping router: {e}");
        }
    }
}
