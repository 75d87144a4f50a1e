//! Finds the closes the kernel never reported: every few seconds, while
//! connections are tracked, the tracked kernel connections are compared
//! with the sockets sock_diag lists in their network namespaces (on a
//! thread of its own, off the capture loop), and those whose sockets are
//! gone are closed (`Processor::close_gone`, probe `sock_diag:inet`). Once
//! more at shutdown, after the last drain of the ring buffer.

use crate::sock_diag;
use anyhow::Result;
use nettap_core::conn::{MissingSockets, NetnsSockets, TrackedSocket};
use nettap_core::processor::Processor;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Namespaces' listings, by inode.
type Listing = HashMap<u32, NetnsSockets>;

/// Processes per namespace tried as a way into it.
const WAYS_IN: usize = 4;

/// The comparisons of one capture.
pub struct MissingCloses {
    every: Duration,
    last: Instant,
    /// The table as it was when the running listing started, and its result.
    pending: Option<(Vec<TrackedSocket>, oneshot::Receiver<Listing>)>,
    missing: MissingSockets,
    closed: u64,
    warned_unknown: bool,
}

impl MissingCloses {
    /// Compares every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
            pending: None,
            missing: MissingSockets::default(),
            closed: 0,
            warned_unknown: false,
        }
    }

    /// At a tick: starts a listing when one is due and none runs.
    pub fn maybe_start(&mut self, proc: &Processor) {
        if self.pending.is_some() || self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let tracked = proc.tracked_sockets();
        if tracked.is_empty() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        match list_on_thread(&tracked, move |listing| drop(tx.send(listing))) {
            Ok(_) => self.pending = Some((tracked, rx)),
            Err(e) => warn!(error = %e, "cannot start a sock_diag listing"),
        }
    }

    /// The running listing's result (pending for ever while none runs).
    pub async fn listed(&mut self) -> Listing {
        match self.pending.as_mut() {
            Some((_, rx)) => rx.await.unwrap_or_default(),
            None => std::future::pending().await,
        }
    }

    /// Closes what `listing` (of the running listing) shows gone.
    pub fn apply(&mut self, listing: Listing, proc: &mut Processor, now_boot_ns: u64) -> Result<()> {
        let Some((tracked, _)) = self.pending.take() else { return Ok(()) };
        self.close(&tracked, &listing, false, proc, now_boot_ns)
    }

    /// At shutdown, after the ring buffer's last drain: one listing, each
    /// connection missing from it closed (nothing is on its way any more),
    /// waiting at most `timeout`.
    pub fn finish(&mut self, proc: &mut Processor, timeout: Duration, now_boot_ns: u64) -> Result<()> {
        let tracked = proc.tracked_sockets();
        if !tracked.is_empty() {
            let (tx, rx) = std::sync::mpsc::channel();
            list_on_thread(&tracked, move |listing| drop(tx.send(listing)))?;
            match rx.recv_timeout(timeout) {
                Ok(listing) => self.close(&tracked, &listing, true, proc, now_boot_ns)?,
                Err(_) => warn!(?timeout, "the last sock_diag listing did not finish in time"),
            }
        }
        if self.closed > 0 {
            info!(closes = self.closed, "closes found by sock_diag in all");
        }
        Ok(())
    }

    fn close(
        &mut self,
        tracked: &[TrackedSocket],
        listing: &Listing,
        final_listing: bool,
        proc: &mut Processor,
        now_boot_ns: u64,
    ) -> Result<()> {
        if !self.warned_unknown && listing.values().any(|l| *l == NetnsSockets::Unknown) {
            self.warned_unknown = true;
            warn!(
                "some network namespaces cannot be listed (entering them needs CAP_SYS_ADMIN, \
                 and no process is left in them to read their tables through): a close the \
                 kernel does not report there stays missing"
            );
        }
        let gone = self.missing.compare(tracked, listing, final_listing);
        if !gone.is_empty() {
            let closed = proc.close_gone(&gone, now_boot_ns)?;
            self.closed += closed as u64;
            info!(closes = closed, "closes the kernel did not report, found by sock_diag");
        }
        Ok(())
    }
}

/// Lists the namespaces of `tracked` on a thread of its own (entering a
/// namespace changes the calling thread's) and hands the listing to `done`.
fn list_on_thread(
    tracked: &[TrackedSocket],
    done: impl FnOnce(Listing) + Send + 'static,
) -> std::io::Result<()> {
    let namespaces = ways_in(tracked);
    std::thread::Builder::new()
        .name("sock-diag".into())
        .spawn(move || done(sock_diag::list(&namespaces)))
        .map(drop)
}

/// Each namespace of `tracked` with a few of its processes.
fn ways_in(tracked: &[TrackedSocket]) -> HashMap<u32, Vec<u32>> {
    let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
    for t in tracked {
        let pids = out.entry(t.netns).or_default();
        if pids.len() < WAYS_IN && !pids.contains(&t.pid) {
            pids.push(t.pid);
        }
    }
    out
}
