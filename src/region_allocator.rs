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
//! growing the last block grows it in place. Large blocks still go to the
//! system allocator (see [`LARGE_BYTES`]).
//!
//! Long-running commands (`run`, `resume`, `worker`, `serve`, `lsp`) never
//! enable it: they free as they go, and their memory per in-flight call is a
//! figure the project holds to. When the region is full, or cannot be
//! reserved, allocation falls back to the system allocator; a block is given
//! back to whichever allocator it came from by its address.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Address space reserved by [`RegionAllocator::enable`]. Reserved, not
/// committed: pages cost memory only once touched. A check of 11,000 lines
/// touches a few tens of MiB of it; past this, the system allocator takes over.
const REGION_BYTES: usize = 1 << 30;

/// Blocks this big go to the system allocator even while the region is on:
/// they are the vectors that double as they grow (pest's token queue, the
/// graph's node list), and in a region every doubling would copy the block
/// into fresh memory and keep the old one. glibc maps each of them on its
/// own ([`RegionAllocator::enable`] pins its threshold here), grows it with
/// `mremap` without copying, and unmaps it when freed.
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
        }
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

    /// A block from this thread's slab (or a new one), or `None` when the
    /// region is off or full, or the block is large.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if self.start.load(Ordering::Acquire) == 0 || layout.size() >= LARGE_BYTES {
            return None;
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
        let end = self.end.load(Ordering::Relaxed);
        let mut next = self.next.load(Ordering::Relaxed);
        let slab = loop {
            let after = next.checked_add(bytes)?;
            if after > end {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(next, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break next,
                Err(moved) => next = moved,
            }
        };
        let at = align_up(slab, layout.align())?;
        Self::set_slab((slab, at + layout.size(), slab + bytes));
        Some(at as *mut u8)
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
        // SAFETY: as for `alloc`.
        let moved = unsafe { self.alloc(new_layout) };
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
    fn large_blocks_are_the_system_allocators() {
        let region = RegionAllocator::new();
        region.enable();
        let l = layout(LARGE_BYTES, 8);
        unsafe {
            let p = region.alloc(l);
            assert!(!p.is_null() && !region.contains(p));
            region.dealloc(p, l);
            // A small block that grows large moves out too.
            let small = region.alloc(layout(64, 8));
            let grown = region.realloc(small, layout(64, 8), LARGE_BYTES);
            assert!(!region.contains(grown));
            region.dealloc(grown, l);
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
