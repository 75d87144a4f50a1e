//! The bounded queue between the capture loop and the exporter thread: a
//! push never waits, and a full queue refuses (the caller counts what it
//! sheds), so a collector that is down costs at most the bound in memory.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Something queued with the memory it holds.
pub trait Weighed {
    /// Bytes this item holds (an estimate of its heap use).
    fn bytes(&self) -> usize;
}

/// A byte-bounded queue.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    max_bytes: usize,
    batch: usize,
}

struct State<T> {
    items: VecDeque<T>,
    bytes: usize,
    closed: bool,
}

/// What `pop_batch` hands over.
pub struct Batch<T> {
    /// Up to the batch size, oldest first.
    pub items: Vec<T>,
    /// The queue is closed: no more items come after what is queued.
    pub closed: bool,
    /// Items and bytes still queued after this batch.
    pub left: (usize, usize),
}

impl<T: Weighed> Queue<T> {
    /// At most `max_bytes` queued; batches of `batch` items.
    pub fn new(max_bytes: usize, batch: usize) -> Self {
        Self {
            state: Mutex::new(State { items: VecDeque::new(), bytes: 0, closed: false }),
            wake: Condvar::new(),
            max_bytes,
            batch,
        }
    }

    /// Queues `item`, or hands it back when it would pass the bound.
    /// Returns the items and bytes queued now.
    pub fn push(&self, item: T) -> Result<(usize, usize), T> {
        let n = item.bytes();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.bytes + n > self.max_bytes {
            return Err(item);
        }
        s.bytes += n;
        s.items.push_back(item);
        // The exporter wakes on its own every linger period; waking it per
        // item would be a system call per record. A burst wakes it early:
        // a full batch, or half the bound reached.
        let half = self.max_bytes / 2;
        if s.items.len() == self.batch || (s.bytes >= half && s.bytes - n < half) {
            self.wake.notify_one();
        }
        Ok((s.items.len(), s.bytes))
    }

    /// Stops the queue: the exporter takes what is left and ends.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.wake.notify_all();
    }

    /// Waits until a batch is full, the queue closes or `linger` passes,
    /// then takes up to a batch.
    pub fn pop_batch(&self, linger: Duration) -> Batch<T> {
        let deadline = Instant::now() + linger;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.items.len() < self.batch && s.bytes < self.max_bytes / 2 && !s.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self.wake.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        let n = s.items.len().min(self.batch);
        let items: Vec<T> = s.items.drain(..n).collect();
        s.bytes -= items.iter().map(Weighed::bytes).sum::<usize>();
        Batch { items, closed: s.closed, left: (s.items.len(), s.bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct B(usize);
    impl Weighed for B {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn a_full_queue_refuses_and_takes_again_once_drained() {
        let q = Queue::new(100, 2);
        assert_eq!(q.push(B(60)).ok(), Some((1, 60)));
        assert_eq!(q.push(B(50)).err().map(|b| b.0), Some(50), "over the bound");
        assert_eq!(q.push(B(40)).ok(), Some((2, 100)));
        let b = q.pop_batch(Duration::ZERO);
        assert_eq!(b.items.iter().map(|b| b.0).collect::<Vec<_>>(), [60, 40]);
        assert_eq!(b.left, (0, 0));
        assert!(q.push(B(100)).is_ok());
    }

    #[test]
    fn a_batch_waits_for_linger_or_close() {
        let q = std::sync::Arc::new(Queue::new(100, 10));
        q.push(B(1)).ok();
        let t = Instant::now();
        let b = q.pop_batch(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!((b.items.len(), b.closed), (1, false));
        let q2 = q.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q2.close();
        });
        let b = q.pop_batch(Duration::from_secs(10));
        assert!(b.closed && b.items.is_empty());
        closer.join().unwrap();
    }
}
