//! Kernel timestamps (CLOCK_BOOTTIME, which keeps counting in suspend) to
//! the CLOCK_REALTIME nanoseconds of CONTRACT.md.

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Converts boot-time ns to realtime ns with an offset taken once.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset: i128,
}

impl Clock {
    /// Reads both clocks now.
    pub fn new() -> Self {
        Self { offset: now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME) }
    }

    /// A clock whose realtime is boot time plus `offset` ns (tests, replays).
    pub fn with_offset(offset: i128) -> Self {
        Self { offset }
    }

    /// Realtime ns for a `bpf_ktime_get_boot_ns()` value.
    pub fn realtime_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset).max(0) as u64
    }

    /// Realtime ns now.
    pub fn now_ns(&self) -> u64 {
        now(libc::CLOCK_REALTIME) as u64
    }

    /// Boot-time ns now.
    pub fn boot_now_ns() -> u64 {
        now(libc::CLOCK_BOOTTIME) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_now_maps_to_realtime_now() {
        let c = Clock::new();
        let mapped = c.realtime_ns(Clock::boot_now_ns()) as i128;
        let real = c.now_ns() as i128;
        assert!((real - mapped).abs() < 50_000_000, "{real} vs {mapped}");
    }
}
