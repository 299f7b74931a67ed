//! Whether this process can run a second thread at the same time as this
//! one: the split parse and the region's page populator use one only then.

use std::sync::OnceLock;

/// Whether two of the CPUs this process may run on exist. Asked once per
/// process. On Linux it is the affinity mask, one system call: the standard
/// library's `available_parallelism` also reads the cgroup's CPU quota from
/// `/proc`, which took longer than the parse of a 1,000-line flow's head. A
/// quota below two CPUs makes the second thread wait for its turn; what it
/// computes is the same.
pub fn second_core() -> bool {
    static SECOND_CORE: OnceLock<bool> = OnceLock::new();
    *SECOND_CORE.get_or_init(|| cpus().is_some_and(|n| n >= 2))
}

#[cfg(target_os = "linux")]
fn cpus() -> Option<usize> {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set, and the call
    // writes at most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        usize::try_from(libc::CPU_COUNT(&set)).ok()
    }
}

#[cfg(not(target_os = "linux"))]
fn cpus() -> Option<usize> {
    std::thread::available_parallelism().ok().map(usize::from)
}
