//! How long one PutSnapshotBlock attempt may take before it is abandoned and retried.
//!
//! A fixed limit fails on a slow uplink: with 64 blocks of 512 KiB in flight, each block gets a
//! 64th of the uplink, so at 4 Mbit/s every block needs about 70 s, and a 60 s limit would
//! abandon (and resend) every one of them. So the limit follows the uplink as measured: the
//! blocks in flight at the rate the upload has achieved so far, with room for its swings; never
//! below the configured floor (`--attempt-timeout`); and doubled for each attempt of a block
//! that timed out before, so that even the first blocks, sent before anything is measured,
//! get through on a slow link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The measured rate may swing by this much before a block on its way is abandoned.
const HEADROOM: f64 = 3.0;
/// No attempt waits longer than this.
const CEILING: Duration = Duration::from_secs(30 * 60);

/// The uplink as measured by the blocks sent so far.
#[derive(Debug)]
pub struct Pace {
    floor: Duration,
    in_flight_bytes: u64,
    started: Mutex<Option<Instant>>,
    bytes_done: AtomicU64,
}

impl Pace {
    /// For `workers` blocks of `block_size` bytes in flight at once; no attempt gets less than
    /// `floor`.
    pub fn new(floor: Duration, workers: usize, block_size: u64) -> Pace {
        Pace {
            floor,
            in_flight_bytes: workers.max(1) as u64 * block_size,
            started: Mutex::new(None),
            bytes_done: AtomicU64::new(0),
        }
    }

    /// A block is being sent: the measurement starts with the first.
    pub fn sending(&self) {
        let mut s = self.started.lock().unwrap_or_else(|e| e.into_inner());
        s.get_or_insert_with(Instant::now);
    }

    /// A block of `bytes` reached AWS.
    pub fn sent(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The rate achieved so far, bytes per second; `None` before anything was sent.
    fn rate(&self) -> Option<f64> {
        let started = (*self.started.lock().unwrap_or_else(|e| e.into_inner()))?;
        let done = self.bytes_done.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        (done > 0 && secs > 0.0).then(|| done as f64 / secs)
    }

    /// The limit for attempt `attempt` (1, 2, …) of one block.
    pub fn attempt_timeout(&self, attempt: u32) -> Duration {
        limit(self.floor, self.in_flight_bytes, self.rate(), attempt)
    }
}

/// [`Pace::attempt_timeout`]'s arithmetic (unit-tested).
fn limit(floor: Duration, in_flight_bytes: u64, rate: Option<f64>, attempt: u32) -> Duration {
    let need = rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64((in_flight_bytes as f64 / r * HEADROOM).min(1e6)))
        .unwrap_or_default();
    floor
        .max(need)
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(CEILING)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_limit_follows_the_uplink() {
        let floor = Duration::from_secs(60);
        // Nothing measured yet: the floor, doubled for each earlier timeout.
        assert_eq!(limit(floor, 32 * MIB, None, 1), floor);
        assert_eq!(limit(floor, 32 * MIB, None, 3), floor * 4);
        // A fast uplink (100 MiB/s): 64 blocks in flight cross it in a third of a second.
        assert_eq!(limit(floor, 32 * MIB, Some(100.0 * MIB as f64), 1), floor);
        // 0.5 MiB/s (4 Mbit/s): 32 MiB in flight take 64 s; with headroom, 192 s.
        let slow = limit(floor, 32 * MIB, Some(0.5 * MIB as f64), 1);
        assert_eq!(slow, Duration::from_secs(192));
        // Never unbounded.
        assert_eq!(limit(floor, 32 * MIB, Some(1.0), 9), CEILING);
    }

    #[test]
    fn the_rate_is_what_was_sent_over_the_time_taken() {
        let p = Pace::new(Duration::from_secs(1), 8, 512 * 1024);
        assert_eq!(p.rate(), None);
        p.sending();
        std::thread::sleep(Duration::from_millis(50));
        p.sent(4 * MIB);
        let r = p.rate().unwrap();
        assert!(r > MIB as f64 && r < 100.0 * MIB as f64, "{r}");
    }
}
