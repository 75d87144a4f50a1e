//! How in-process agents' plaintext (the JVM agent in `jvm-agent/`) reaches
//! the sensor; their frames are decoded by `nettap_core::agent`. Two routes
//! feed one channel: the socket handoff (`handoff.rs`, the default: no path,
//! nothing any other process can reach) and, when named, a Unix socket path.

mod handoff;
mod listener;

pub use handoff::{offered_fd, take, Handoff, TakeError, Watcher, READY, THREAD_PREFIX};
pub use listener::{listen, AgentSocket, ListenError, DEFAULT_SOCKET};

use nettap_core::agent::AgentMsg;
use std::path::Path;

/// The frames of one read from one agent: one channel message per read, not
/// per frame (a read holds hundreds of frames under load).
pub type AgentMsgs = Vec<AgentMsg>;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The routes served; dropping it stops them.
#[derive(Debug)]
pub struct AgentRoutes {
    /// The handoff's discovery, told about new programs.
    pub handoff: Option<Handoff>,
    /// The path socket, if one was named and could be served.
    pub socket: Option<AgentSocket>,
}

/// Serves the handoff and, if `path` is given, the socket at `path`; a route
/// that cannot be served is logged and the others go on. Must run inside a
/// Tokio runtime.
pub fn serve(path: Option<&Path>) -> (AgentRoutes, mpsc::Receiver<AgentMsgs>) {
    let (tx, rx) = listener::channel();
    let socket = path.and_then(|path| match listener::listen_to(path, tx.clone()) {
        Ok(s) => {
            info!(path = %path.display(), "agent socket served");
            Some(s)
        }
        Err(e) => {
            warn!(error = %crate::probes::error_chain(&e), "agent socket not served: JVM agents told to use it cannot send plaintext");
            None
        }
    });
    let handoff = match handoff::start(tx) {
        Ok(h) => {
            info!("agent handoff served: JVM agents are found by their thread names, their sockets taken with pidfd_getfd");
            Some(h)
        }
        Err(e) => {
            warn!(error = %e, "agent handoff not served: only JVM agents told a socket path can send plaintext");
            None
        }
    };
    (AgentRoutes { handoff, socket }, rx)
}
