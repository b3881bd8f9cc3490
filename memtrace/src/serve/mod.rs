//! The server of `memtrace serve` (fleet mode): a session that does not end,
//! takes a snapshot every `--interval`, and serves the latest one over HTTP.
//!
//! - [`http`]: a small, bounded, read-only HTTP/1.1 server on std threads ([`Server`]).
//! - [`Latest`]: the shared slot the session publishes each rendered snapshot into and the
//!   handlers read from (readers clone an `Arc`; nobody waits on a client).
//! - [`endpoints`]: [`Published`] (a snapshot rendered once for every endpoint) and
//!   [`endpoints::routes`], the route table of `/metrics`, `/debug/pprof/heap` (and
//!   `/debug/pprof/allocs`), `/report.json`, `/healthz` and `/`.
//!
//! Wiring (`commands/serve.rs`): start a [`http::Server`] with [`endpoints::routes`] over a
//! [`Latest`], run the session with `Session::run_with`, and publish
//! [`Published::render`] of each snapshot's report into the [`Latest`]; at the end, publish the
//! final report and shut the server down.

pub mod endpoints;
pub mod http;
#[cfg(test)]
mod prometheus_tests;

use std::sync::{Arc, PoisonError, RwLock};

pub use endpoints::Published;

/// The latest published value, shared between one publisher and any number of readers.
///
/// Readers hold the lock only to clone an `Arc` (never while they send anything); the
/// publisher holds it only to swap the pointer, and drops the previous value after releasing
/// it. So a slow client never delays a publish, and a publish never waits on a client.
pub struct Latest<T> {
    slot: Arc<RwLock<Option<Arc<T>>>>,
}

impl<T> Clone for Latest<T> {
    fn clone(&self) -> Self {
        Latest {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest {
            slot: Arc::new(RwLock::new(None)),
        }
    }
}

impl<T> Latest<T> {
    /// An empty slot: [`Latest::get`] is `None` until the first [`Latest::publish`].
    pub fn new() -> Self {
        Latest::default()
    }

    /// Makes `value` the latest; readers that already hold the previous one keep it.
    pub fn publish(&self, value: T) {
        let value = Arc::new(value);
        let previous = {
            // A reader cannot panic while holding the lock (it only clones an Arc); if one
            // did, the slot is still a valid pointer.
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            slot.replace(value)
        };
        drop(previous);
    }

    /// The latest value, if any was published.
    pub fn get(&self) -> Option<Arc<T>> {
        self.slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_read() {
        let latest: Latest<String> = Latest::new();
        assert!(latest.get().is_none());
        latest.publish("one".to_string());
        let held = latest.get().expect("published");
        let reader = latest.clone();
        latest.publish("two".to_string());
        // A reader keeps what it took; new reads see the newest.
        assert_eq!(*held, "one");
        assert_eq!(*reader.get().expect("published"), "two");
    }

    #[test]
    fn readers_never_block_the_publisher() {
        let latest: Latest<Vec<u8>> = Latest::new();
        latest.publish(vec![0; 1024]);
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let l = latest.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
                    while std::time::Instant::now() < until {
                        let v = l.get().expect("published");
                        n += v.len() as u64;
                    }
                    n
                })
            })
            .collect();
        let started = std::time::Instant::now();
        for i in 0..1000u32 {
            latest.publish(vec![0; 1024 + (i as usize % 7)]);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "1000 publishes took {:?}",
            started.elapsed()
        );
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
    }
}
