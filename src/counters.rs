//! Monotonic request counters of one source, shown in `stats`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    write_errors: AtomicU64,
    /// The errno of the last failed write.
    last_write_errno: AtomicU64,
    msync_calls: AtomicU64,
    msync_errors: AtomicU64,
    msync_last_ns: AtomicU64,
    msync_total_ns: AtomicU64,
    invalidations: AtomicU64,
    open_handles: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub write_errors: u64,
    pub msync_calls: u64,
    pub msync_errors: u64,
    pub msync_last_ns: u64,
    pub msync_total_ns: u64,
    pub invalidations: u64,
    pub open_handles: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn record_read(&self, bytes: u64) {
        add(&self.reads, 1);
        add(&self.read_bytes, bytes);
    }

    pub fn record_write(&self, bytes: u64) {
        add(&self.writes, 1);
        add(&self.write_bytes, bytes);
    }

    pub fn record_write_error(&self, errno: i32) {
        add(&self.write_errors, 1);
        self.last_write_errno
            .store(u64::try_from(errno).unwrap_or(0), Ordering::Relaxed);
    }

    /// Failed writes so far, and the errno of the last one.
    pub fn write_failures(&self) -> (u64, i32) {
        (
            self.write_errors.load(Ordering::Relaxed),
            i32::try_from(self.last_write_errno.load(Ordering::Relaxed)).unwrap_or(libc::EIO),
        )
    }

    pub fn record_msync(&self, duration_ns: u64, ok: bool) {
        add(&self.msync_calls, 1);
        add(&self.msync_total_ns, duration_ns);
        self.msync_last_ns.store(duration_ns, Ordering::Relaxed);
        if !ok {
            add(&self.msync_errors, 1);
        }
    }

    pub fn record_invalidation(&self) {
        add(&self.invalidations, 1);
    }

    pub fn opened(&self) {
        add(&self.open_handles, 1);
    }

    pub fn released(&self) {
        self.open_handles.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            reads: get(&self.reads),
            read_bytes: get(&self.read_bytes),
            writes: get(&self.writes),
            write_bytes: get(&self.write_bytes),
            write_errors: get(&self.write_errors),
            msync_calls: get(&self.msync_calls),
            msync_errors: get(&self.msync_errors),
            msync_last_ns: get(&self.msync_last_ns),
            msync_total_ns: get(&self.msync_total_ns),
            invalidations: get(&self.invalidations),
            open_handles: get(&self.open_handles),
        }
    }
}
