//! Beside the request flow: work that grows with the catalog (parsing, comparing) runs,
//! and large values the catalog and policy side replace (a catalog copy, a policy) are
//! freed, on tokio's blocking pool, so the async workers that run SPOP decisions never
//! wait for it; with one worker (the default on two CPUs) every decision would.

use std::sync::Arc;
use std::time::Duration;

/// How long [`release_off_worker`] waits for other holders to let go.
pub const LAST_REFERENCE_WAIT: Duration = Duration::from_millis(500);

/// Runs `f` on the blocking pool and waits for it; `None` if the runtime is shutting
/// down. A panic in `f` goes on in the caller, as if `f` had run there.
pub async fn run_off_worker<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Some(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Drops `value` on the blocking pool when called within a runtime, else here.
pub fn drop_off_worker<T: Send + 'static>(value: T) {
    off_worker(move || drop(value));
}

fn off_worker(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(f);
        }
        Err(_) => f(),
    }
}

/// Drops `value`, a replaced policy or catalog, on the blocking pool, and waits there
/// (up to [`LAST_REFERENCE_WAIT`]) for short-lived holders to let go first: a decision
/// in progress holds the policy through an arc-swap guard, which the swap turns into a
/// reference, and whoever drops the last reference frees it. Without the wait that
/// was often the worker running the decision.
pub fn release_off_worker<T: Send + Sync + 'static>(value: Arc<T>) {
    off_worker(move || {
        let mut value = value;
        let start = std::time::Instant::now();
        loop {
            match Arc::try_unwrap(value) {
                Ok(last) => return drop(last),
                Err(shared) if start.elapsed() < LAST_REFERENCE_WAIT => {
                    value = shared;
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Held for longer (a caller of `PolicyHandle::ready`): its holder frees it.
                Err(shared) => return drop(shared),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    /// Records the thread it is dropped on.
    struct Tracked(Arc<Mutex<Option<ThreadId>>>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }

    /// A value still held for a moment by a task on the worker (a decision's policy
    /// guard) is freed on the blocking pool once that task lets go, not by the task.
    #[test]
    fn the_last_reference_is_dropped_on_the_blocking_pool() {
        let rt = crate::server::runtime(1).unwrap();
        let dropped_on = Arc::new(Mutex::new(None));
        let worker = rt.block_on(async {
            let value = Arc::new(Tracked(dropped_on.clone()));
            let decision = value.clone();
            let worker = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(decision);
                std::thread::current().id()
            });
            release_off_worker(value);
            worker.await.unwrap()
        });
        drop(rt);
        let dropped_on = dropped_on.lock().unwrap().expect("dropped");
        assert_ne!(dropped_on, worker, "freed by the task on the worker");
        assert_ne!(dropped_on, std::thread::current().id());
    }
}
