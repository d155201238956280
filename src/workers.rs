//! Worker threads: how many, and starting them without a panic when the OS says no.

use std::thread::{Builder, Scope, ScopedJoinHandle};

/// The most workers any stage runs, whatever was asked.
pub const MAX_THREADS: usize = 256;

/// `requested` workers, capped at 4 × the cores and at [`MAX_THREADS`]: more buys no
/// speed (layers are produced and compressed on the CPU; 4× leaves room for waiting on
/// disks), while each layer worker holds a few MB of buffers and each thread a stack.
pub fn cap(requested: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    requested.clamp(1, cores.saturating_mul(4).min(MAX_THREADS))
}

/// Starts up to `count` threads in `scope`, each running `work`. When the OS refuses a
/// thread (too many processes, no memory for a stack), the ones already started do all
/// the work: only when none could start is it an error.
///
/// # Errors
/// Not even one thread could be started.
pub fn spawn_scoped<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    count: usize,
    work: &'scope F,
) -> std::io::Result<Vec<ScopedJoinHandle<'scope, T>>>
where
    F: Fn() -> T + Sync,
    T: Send + 'scope,
{
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        match Builder::new().spawn_scoped(scope, work) {
            Ok(handle) => handles.push(handle),
            Err(e) if handles.is_empty() => {
                return Err(std::io::Error::new(e.kind(), format!("cannot start a worker thread: {e}")))
            }
            Err(_) => break,
        }
    }
    Ok(handles)
}
