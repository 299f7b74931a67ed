//! The allocator of the `flowc` binary: the system allocator, until a batch
//! command switches it to a region.
//!
//! `flowc check` on a big file allocates about 200 bytes per byte of source
//! (pest's token queue, the tree, the lowered graph, the sealed copy) in some
//! 30 allocations per line, and frees almost none of it before the process
//! exits. With glibc's allocator nearly a third of such a run went to
//! `malloc`, `free` and the page faults of a heap grown a page at a time.
//! A batch command that ends soon after its work
//! ([`RegionAllocator::enable`]; see `main.rs` for which) instead takes
//! memory from one reserved region by bumping a pointer, backed by huge
//! pages where the kernel offers them, and never gives it back: freeing only
//! rewinds the pointer when the block freed is the last one handed out, and
//! growing the last block grows it in place. Blocks that grow large go to
//! the system allocator (see [`LARGE_BYTES`]). Where there is a second
//! core, a thread at the lowest priority faults the region's pages in
//! ahead of use ([`RegionAllocator::populate_ahead`]).
//!
//! Long-running commands (`run`, `resume`, `worker`, `serve`, `lsp`) never
//! enable it: they free as they go, and their memory per in-flight call is a
//! figure the project holds to. When the region is full, or cannot be
//! reserved, allocation falls back to the system allocator; a block is given
//! back to whichever allocator it came from by its address, except a large
//! one of the system's, which stays mapped until exit (see `dealloc`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Address space reserved by [`RegionAllocator::enable`]. Reserved, not
/// committed: pages cost memory only once touched. A check of 11,000 lines
/// touches a few tens of MiB of it; past this, the system allocator takes over.
const REGION_BYTES: usize = 1 << 30;

/// A block that grows to this size goes to the system allocator even while
/// the region is on: it is a vector that doubles as it grows (pest's token
/// queue), and in a region every doubling would copy the block into fresh
/// memory and keep the old one. glibc maps each such block on its own
/// ([`RegionAllocator::enable`] pins its threshold here) and grows it with
/// `mremap` without copying; freed while the region is on, it stays mapped. A block allocated
/// this big at once (a vector sized up front, a sealed copy of a step list)
/// stays in the region, on its huge pages, outside the slabs.
const LARGE_BYTES: usize = 256 << 10;

/// How much of the region a thread takes at a time: each thread bumps in a
/// slab of its own, so two threads parsing at once never contend for a
/// cache line on every allocation.
const SLAB_BYTES: usize = 1 << 20;

thread_local! {
    /// This thread's slab: its start, the next free address, its end (all
    /// 0 before the thread's first block from a region).
    static SLAB: Cell<(usize, usize, usize)> = const { Cell::new((0, 0, 0)) };
}

pub struct RegionAllocator {
    /// The region's first address; 0 while the region is off.
    start: AtomicUsize,
    /// One past the region's last address.
    end: AtomicUsize,
    /// The start of the region's part no slab has taken yet.
    next: AtomicUsize,
    /// How much address space `enable` reserves.
    bytes: usize,
}

/// `at` rounded up to `align`, a power of two (a `Layout` guarantees it).
fn align_up(at: usize, align: usize) -> Option<usize> {
    Some(at.checked_add(align - 1)? & !(align - 1))
}

impl RegionAllocator {
    pub const fn new() -> Self {
        RegionAllocator::reserving(REGION_BYTES)
    }

    const fn reserving(bytes: usize) -> Self {
        RegionAllocator {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            bytes,
        }
    }

    /// Serves every later allocation from a region that is never returned
    /// to the system. Only for a command whose allocations are bounded by
    /// its input and that exits when done. Does nothing when called again,
    /// or where the region cannot be reserved.
    pub fn enable(&self) {
        if self.start.load(Ordering::Acquire) != 0 {
            return;
        }
        let Some(start) = reserve(self.bytes) else {
            return;
        };
        self.next.store(start, Ordering::Relaxed);
        self.end.store(start + self.bytes, Ordering::Relaxed);
        self.start.store(start, Ordering::Release);
        // glibc raises its threshold for mapping a block on its own every
        // time such a block is freed, after which big blocks come from its
        // heap and are copied when they grow. Pinned, they never are.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: `mallopt` only sets a tuning parameter of glibc's malloc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BYTES as libc::c_int);
            // A thread's first `malloc` (its TLS destructors, a large
            // block) would otherwise map an arena of its own: four
            // memory-map system calls on the parse thread's start. The
            // threads of a batch command barely use glibc; one arena does.
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }

    /// Starts a thread that faults the region's pages in ahead of use, at
    /// the lowest priority. Each page is a 2 MiB huge page that takes the
    /// kernel most of a millisecond to zero here; faulted in by the thread
    /// that first touches it, that was a seventh of a big check's main
    /// thread, most of it while the main thread lowers and checks and the
    /// second core is idle. This thread zeroes them there instead, by as
    /// much as the region has handed out so far, from one to
    /// [`POPULATE_AHEAD_BYTES`] ahead of the part no slab has taken. At a
    /// normal priority it took the second core from the parse, and was
    /// slower. Populating never changes a byte, so it may race with the
    /// slabs' owners writing the same pages. Does nothing when the region
    /// is off or on one core.
    pub fn populate_ahead(&'static self) {
        let start = self.start.load(Ordering::Acquire);
        if start == 0 || !flowc::cores::second_core() {
            return;
        }
        let end = self.end.load(Ordering::Relaxed);
        let _ = std::thread::Builder::new()
            .name("region-populate".into())
            .stack_size(64 << 10)
            .spawn(move || {
                lowest_priority();
                let mut done = align_up(start, HUGE_PAGE_BYTES).unwrap_or(end);
                // While far enough ahead it looks again after a pause that
                // doubles up to a millisecond: a long `fmt` or `check` that
                // has stopped taking memory is not woken 20,000 times a
                // second, and a millisecond's allocation (well under 1 MiB)
                // never catches up with the pages kept ready.
                let mut pause = std::time::Duration::from_micros(50);
                // Where the kernel cannot populate (before Linux 5.14), the
                // slabs' owners fault their pages in, as without this thread.
                while done < end {
                    let next = self.next.load(Ordering::Relaxed);
                    let ahead = (next - start).clamp(HUGE_PAGE_BYTES, POPULATE_AHEAD_BYTES);
                    if done >= next.saturating_add(ahead).min(end) {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(std::time::Duration::from_millis(1));
                        continue;
                    }
                    pause = std::time::Duration::from_micros(50);
                    let upto = (done + HUGE_PAGE_BYTES).min(end);
                    done = if populate(done, upto) { upto } else { end };
                }
            });
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        let start = self.start.load(Ordering::Acquire);
        let at = ptr as usize;
        start != 0 && at >= start && at < self.end.load(Ordering::Relaxed)
    }

    /// This thread's slab, if it is a slab of this region (a test may use
    /// two allocators on one thread).
    fn slab(&self) -> Option<(usize, usize, usize)> {
        let slab = SLAB.try_with(Cell::get).ok()?;
        let start = self.start.load(Ordering::Acquire);
        (start != 0 && slab.0 >= start && slab.2 <= self.end.load(Ordering::Relaxed))
            .then_some(slab)
    }

    fn set_slab(slab: (usize, usize, usize)) {
        // Only fails while the thread is being torn down, when nothing is
        // allocated from the region any more.
        let _ = SLAB.try_with(|s| s.set(slab));
    }

    /// A block from this thread's slab (or a new one, or of its own when
    /// it is large), or `None` when the region is off or full.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if self.start.load(Ordering::Acquire) == 0 {
            return None;
        }
        if layout.size() >= LARGE_BYTES {
            return self.take(layout);
        }
        if let Some((start, next, end)) = self.slab() {
            let at = align_up(next, layout.align())?;
            if at + layout.size() <= end {
                Self::set_slab((start, at + layout.size(), end));
                return Some(at as *mut u8);
            }
        }
        // A new slab; the rest of the old one stays unused.
        let bytes = SLAB_BYTES.max(layout.size() + layout.align());
        let slab = self.take_bytes(bytes)?;
        let at = align_up(slab, layout.align())?;
        Self::set_slab((slab, at + layout.size(), slab + bytes));
        Some(at as *mut u8)
    }

    /// A large block of its own, outside every slab: it is never rewound,
    /// so it is memory no block has used, which the kernel zeroed.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let chunk = self.take_bytes(layout.size().checked_add(layout.align())?)?;
        Some(align_up(chunk, layout.align())? as *mut u8)
    }

    /// The start of `bytes` of the region no slab or block has taken yet.
    fn take_bytes(&self, bytes: usize) -> Option<usize> {
        let end = self.end.load(Ordering::Relaxed);
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let after = next.checked_add(bytes)?;
            if after > end {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(next, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(next),
                Err(moved) => next = moved,
            }
        }
    }

    /// Moves this thread's next free address from `from` to `to` if the
    /// block ending at `from` is the last one its slab handed out and `to`
    /// stays inside the slab. Whether it moved.
    fn move_next(&self, block: usize, from: usize, to: usize) -> bool {
        match self.slab() {
            Some((start, next, end)) if block >= start && next == from && to <= end => {
                Self::set_slab((start, to, end));
                true
            }
            _ => false,
        }
    }
}

impl Default for RegionAllocator {
    fn default() -> Self {
        RegionAllocator::new()
    }
}

// SAFETY: every block handed out is either the system allocator's (and goes
// back to it) or a range of the region no other live block overlaps: a slab
// is taken from the region with a compare-and-swap, so each belongs to one
// thread; `bump` hands out `[at, at + size)` of the thread's slab and moves
// the slab's next free address past it, and that address moves back only
// over the slab's last block, when its owner frees or shrinks it.
unsafe impl GlobalAlloc for RegionAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(at) => at,
            // SAFETY: the caller's contract for `layout`, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            // A large block is fresh memory, zero already.
            Some(at) if layout.size() >= LARGE_BYTES => at,
            // Rewound memory may hold old bytes, so zero it.
            // SAFETY: `at` starts `layout.size()` bytes of the region
            // reserved for this block.
            Some(at) => unsafe {
                at.write_bytes(0, layout.size());
                at
            },
            // SAFETY: the caller's contract for `layout`, passed on.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.contains(ptr) {
            // Freed memory is reused only when it is the last block of this
            // thread's slab (a temporary freed at once); otherwise it stays
            // until exit.
            let at = ptr as usize;
            self.move_next(at, at + layout.size(), at);
        } else if layout.size() >= LARGE_BYTES && self.start.load(Ordering::Relaxed) != 0 {
            // A block that grew large, which glibc mapped on its own, stays
            // mapped until exit, as region blocks do: unmapping it takes
            // the process's memory-map lock for writing, which waits for
            // every page fault and `mmap` of the other threads, and flushes
            // the other core's TLB.
        } else {
            // SAFETY: `ptr` came from `System` with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.contains(ptr) {
            // SAFETY: `ptr` came from `System` with `layout`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let at = ptr as usize;
        let old_end = at + layout.size();
        if new_size <= layout.size() {
            // Shrinking the last block gives its tail back.
            self.move_next(at, old_end, at + new_size);
            return ptr;
        }
        // The last block grows where it is (a large one moves out, below).
        if new_size < LARGE_BYTES && self.move_next(at, old_end, at + new_size) {
            return ptr;
        }
        // SAFETY: `new_size` is non-zero and, as the caller guarantees, a
        // valid size for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // A block that grows this big is a vector doubling: it moves to the
        // system allocator, which grows it from then on without copying.
        // SAFETY: as for `alloc`.
        let moved = unsafe {
            if new_size >= LARGE_BYTES {
                System.alloc(new_layout)
            } else {
                self.alloc(new_layout)
            }
        };
        if !moved.is_null() {
            // SAFETY: both blocks are live, distinct and at least
            // `layout.size()` bytes long.
            unsafe { std::ptr::copy_nonoverlapping(ptr, moved, layout.size()) };
            // SAFETY: `ptr` is this allocator's block with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        moved
    }
}

/// The size of a transparent huge page on x86-64 and most arm64 kernels;
/// populating in steps of it faults one huge page per step.
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// How far [`RegionAllocator::populate_ahead`] runs ahead of the region's
/// slabs: a few slabs' worth, so the pages are ready before they are taken,
/// without populating much that is never used.
const POPULATE_AHEAD_BYTES: usize = 8 << 20;

/// Faults in `from..to` for writing without changing its contents, by
/// adding zero to the first byte of each 4 KiB page with one locked
/// instruction. A write fault on the region takes only the lock of the
/// region's own mapping (Linux 6.4 and later). `MADV_POPULATE_WRITE`, used
/// before, holds the process's memory-map lock while the kernel zeroes each
/// huge page, most of a millisecond here, and every `mmap`, `mremap` and
/// `munmap` of the other threads (pest's queue growing, a thread's stack)
/// waited for it: 36 such waits in 40 checks of 1,100 lines, 13 after.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn populate(from: usize, to: usize) -> bool {
    for page in (from..to).step_by(4096) {
        // SAFETY: `page` lies inside the region's mapping, which lives until
        // the process exits. A locked add is one atomic read-modify-write:
        // a slab's owner writing the same byte at once either writes before
        // it, and the add stores that byte back unchanged, or after it; no
        // byte of the region ever changes.
        unsafe {
            std::arch::asm!("lock add byte ptr [{page}], 0", page = in(reg) page, options(nostack));
        }
    }
    true
}

/// Faults in `from..to` for writing without changing its contents; false
/// when the kernel cannot (before Linux 5.14).
#[cfg(all(target_os = "linux", not(target_arch = "x86_64")))]
fn populate(from: usize, to: usize) -> bool {
    // SAFETY: `from..to` lies inside the region's mapping, which lives
    // until the process exits; populating writes no byte of it.
    unsafe {
        libc::madvise(
            from as *mut libc::c_void,
            to - from,
            libc::MADV_POPULATE_WRITE,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_from: usize, _to: usize) -> bool {
    false
}

/// Puts the calling thread below every normal thread: it runs only on a
/// core nothing else wants.
#[cfg(target_os = "linux")]
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 names the calling thread; the parameter is a valid
    // `sched_param` for `SCHED_IDLE`. A failure leaves the priority as is.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

#[cfg(not(target_os = "linux"))]
fn lowest_priority() {}

/// Reserves `bytes` of address space, asking for huge pages: a check of a
/// big file then takes a page fault per 2 MiB instead of per 4 KiB.
#[cfg(target_os = "linux")]
fn reserve(bytes: usize) -> Option<usize> {
    // SAFETY: an anonymous private mapping at an address the kernel picks
    // touches no existing memory; the result is checked before use.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return None;
    }
    // A hint: without transparent huge pages the region works the same,
    // a page at a time.
    // SAFETY: `at..at + bytes` is the mapping just made.
    unsafe { libc::madvise(at, bytes, libc::MADV_HUGEPAGE) };
    Some(at as usize)
}

#[cfg(not(target_os = "linux"))]
fn reserve(_bytes: usize) -> Option<usize> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn off_it_is_the_system_allocator() {
        let region = RegionAllocator::new();
        let l = layout(64, 8);
        unsafe {
            let p = region.alloc(l);
            assert!(!p.is_null() && !region.contains(p));
            region.dealloc(p, l);
        }
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_the_last_one_grows_and_rewinds_in_place() {
        let region = RegionAllocator::new();
        region.enable();
        unsafe {
            let a = region.alloc(layout(3, 1));
            let b = region.alloc(layout(16, 64));
            assert!(region.contains(a) && region.contains(b));
            assert_eq!(b as usize % 64, 0);
            assert!(b as usize >= a as usize + 3);
            b.write_bytes(7, 16);
            // The last block grows where it is and keeps its bytes.
            let grown = region.realloc(b, layout(16, 64), 4096);
            assert_eq!(grown, b);
            assert_eq!(*grown.add(15), 7);
            // A block that is not the last moves, bytes and all.
            a.write_bytes(5, 3);
            let moved = region.realloc(a, layout(3, 1), 10);
            assert_ne!(moved, a);
            assert_eq!(*moved.add(2), 5);
            assert!(moved as usize >= grown as usize + 4096);
            // Freeing the last block rewinds: the next one takes its place,
            // zeroed when asked for.
            moved.write_bytes(9, 10);
            region.dealloc(moved, layout(10, 1));
            let again = region.alloc_zeroed(layout(10, 1));
            assert_eq!(again, moved);
            assert!((0..10).all(|i| *again.add(i) == 0));
        }
    }

    #[test]
    fn a_full_region_falls_back_to_the_system_allocator() {
        let region = RegionAllocator::reserving(2 * SLAB_BYTES);
        region.enable();
        let l = layout(200 << 10, 8);
        unsafe {
            let blocks: Vec<_> = (0..12).map(|_| region.alloc(l)).collect();
            let inside = blocks.iter().filter(|&&p| region.contains(p)).count();
            // Two slabs of five blocks each; the rest are the system's.
            assert_eq!(inside, 10);
            for p in blocks {
                assert!(!p.is_null());
                region.dealloc(p, l);
            }
        }
    }

    #[test]
    fn large_blocks_are_fresh_and_growing_ones_move_to_the_system() {
        let region = RegionAllocator::new();
        region.enable();
        let l = layout(LARGE_BYTES, 64);
        unsafe {
            let small = region.alloc(layout(64, 8));
            // A large block is the region's, aligned, zeroed, outside the
            // thread's slab: the slab goes on after it.
            let p = region.alloc_zeroed(l);
            assert!(region.contains(p) && (p as usize).is_multiple_of(64));
            assert!(std::slice::from_raw_parts(p, LARGE_BYTES)
                .iter()
                .all(|&b| b == 0));
            p.write_bytes(7, LARGE_BYTES);
            let after = region.alloc(layout(64, 8));
            assert_eq!(after as usize, small as usize + 64);
            // Freeing it gives nothing back, and never zeroes a later block.
            region.dealloc(p, l);
            let again = region.alloc_zeroed(l);
            assert!(
                again != p
                    && std::slice::from_raw_parts(again, LARGE_BYTES)
                        .iter()
                        .all(|&b| b == 0)
            );
            // A block that grows large moves out, keeping its bytes: the
            // large one above, and a small one.
            again.write_bytes(3, LARGE_BYTES);
            let grown = region.realloc(again, l, 2 * LARGE_BYTES);
            assert!(!region.contains(grown) && *grown.add(LARGE_BYTES - 1) == 3);
            region.dealloc(grown, layout(2 * LARGE_BYTES, 64));
            after.write_bytes(5, 64);
            let moved = region.realloc(after, layout(64, 8), LARGE_BYTES);
            assert!(!region.contains(moved) && *moved.add(63) == 5);
            region.dealloc(moved, layout(LARGE_BYTES, 8));
        }
    }

    #[test]
    fn populating_ahead_keeps_every_byte_written() {
        let region: &'static RegionAllocator =
            Box::leak(Box::new(RegionAllocator::reserving(64 << 20)));
        region.enable();
        region.populate_ahead();
        let l = layout(4096, 8);
        // Blocks written while the thread populates the pages they are on
        // and the ones after them; 48 MiB, so it catches up and passes.
        let blocks: Vec<*mut u8> = (0..12_288usize)
            .map(|i| unsafe {
                let p = region.alloc(l);
                p.write_bytes(i as u8 | 1, 4096);
                p
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        for (i, &p) in blocks.iter().enumerate() {
            let bytes = unsafe { std::slice::from_raw_parts(p, 4096) };
            assert!(region.contains(p) && bytes.iter().all(|&b| b == i as u8 | 1));
        }
    }

    #[test]
    fn threads_allocating_at_once_get_disjoint_blocks() {
        let region: &'static RegionAllocator = Box::leak(Box::new(RegionAllocator::new()));
        region.enable();
        let l = layout(24, 8);
        let blocks: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4u8)
                .map(|id| {
                    scope.spawn(move || {
                        (0..50_000)
                            .map(|_| unsafe {
                                let p = region.alloc(l);
                                p.write_bytes(id, 24);
                                p as usize
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for (id, mine) in blocks.iter().enumerate() {
            for &p in mine {
                let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, 24) };
                assert!(bytes.iter().all(|&b| b == id as u8), "a block was shared");
            }
        }
    }
}
