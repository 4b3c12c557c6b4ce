//! Giving freed memory back to the system: glibc's allocator keeps freed pages for later, so a
//! process that once held a large backlog (connections, messages, a big task) would keep that
//! much resident for good.

/// Returns the allocator's free pages to the system. Walks the heap: call it after a burst,
/// not per message.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap bookkeeping; it takes no pointers from us
    // and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
