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

pub struct RegionAllocator {
    /// The region's first address; 0 while the region is off.
    start: AtomicUsize,
    /// One past the region's last address.
    end: AtomicUsize,
    /// The next free address: everything from here to `end` is unused.
    next: AtomicUsize,
    /// How much address space `enable` reserves.
    bytes: usize,
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

    /// A block from the region, or `None` when the region is off or full,
    /// or the block is large.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if self.start.load(Ordering::Acquire) == 0 || layout.size() >= LARGE_BYTES {
            return None;
        }
        let end = self.end.load(Ordering::Relaxed);
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            // `align` is a power of two (a `Layout` guarantees it).
            let at = next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
            let after = at.checked_add(layout.size())?;
            if after > end {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(next, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(at as *mut u8),
                Err(moved) => next = moved,
            }
        }
    }

    /// Moves `next` from `from` to `to` if no other block was handed out
    /// after the one ending at `from`. Whether it moved.
    fn move_next(&self, from: usize, to: usize) -> bool {
        to <= self.end.load(Ordering::Relaxed)
            && self
                .next
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for RegionAllocator {
    fn default() -> Self {
        RegionAllocator::new()
    }
}

// SAFETY: every block handed out is either the system allocator's (and goes
// back to it) or a range of the region no other live block overlaps: `bump`
// hands out `[at, at + size)` only after moving `next` past it with a
// compare-and-swap, and `next` moves back only over the last block, when its
// owner frees or shrinks it.
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
            // Freed memory is reused only when it is the last block (a
            // temporary freed at once); otherwise it stays until exit.
            self.move_next(ptr as usize + layout.size(), ptr as usize);
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
            self.move_next(old_end, at + new_size);
            return ptr;
        }
        // The last block grows where it is.
        if let Some(new_end) = at.checked_add(new_size) {
            if self.move_next(old_end, new_end) {
                return ptr;
            }
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
            let moved = region.realloc(a, layout(3, 1), 10);
            assert_ne!(moved, a);
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
        let region = RegionAllocator::reserving(64 << 10);
        region.enable();
        let l = layout(100 << 10, 8);
        unsafe {
            let p = region.alloc(layout(8, 8));
            assert!(region.contains(p));
            // Too big for what is left: the system allocator's block, which
            // goes back to it.
            let q = region.realloc(p, layout(8, 8), 100 << 10);
            assert!(!q.is_null() && !region.contains(q));
            region.dealloc(q, l);
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
        }
    }
}
