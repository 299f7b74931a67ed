//! A durable run's store connection, which a group commit may take to a
//! blocking thread: while the disk syncs, the runtime's thread goes on
//! reading replies and finishing steps, which join the next commit.
//!
//! The store is lent whole (a `Store` is `Send`), and the thread gives it
//! back itself, so a commit comes back even when the step that started it
//! is cancelled meanwhile. Every other use of the store waits for it to come
//! back: writes reach the store in the order the runtime made them, so the
//! spend a write records never goes below one written before it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::store::{Store, StoreError};

pub struct LentStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a lent store comes back, for waiters that block.
    returned: Condvar,
    /// Notified when a lent store comes back, for waiters that await.
    back: tokio::sync::Notify,
}

struct State {
    /// `None` while a commit has it.
    store: Option<Store>,
    /// The number of the last commit that ended (commits are numbered from
    /// 1 in the order they start, and end in that order).
    ended: u64,
    /// Why a commit failed: the run ends with it.
    failed: Option<StoreError>,
    /// Shared slots given back while the store was lent: the commit's
    /// thread frees them before it returns the store.
    frees: Vec<(String, String)>,
}

/// What a commit does with the store.
pub type Commit = Box<dyn FnOnce(&Store) -> Result<(), StoreError> + Send>;

impl LentStore {
    pub fn new(store: Store) -> LentStore {
        LentStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    store: Some(store),
                    ended: 0,
                    failed: None,
                    frees: Vec::new(),
                }),
                returned: Condvar::new(),
                back: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Runs `f` on the store, on this thread, once a commit that has it has
    /// given it back (blocking until then: the synchronous uses are rare,
    /// and a commit is one sync of the disk).
    pub fn with<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.get())
    }

    /// The store, once a commit that has it has given it back (blocking
    /// until then). Never hold it across an `.await`: a commit away could
    /// not give the store back, and would wait for it forever.
    pub fn get(&self) -> HomeStore<'_> {
        HomeStore(self.home())
    }

    /// The number of the last commit that ended.
    pub fn ended(&self) -> u64 {
        self.lock().ended
    }

    /// Why a commit failed, if one did.
    pub fn failure(&self) -> Option<StoreError> {
        self.lock().failed.clone()
    }

    /// Waits, without blocking the thread, until no commit has the store.
    pub async fn returned(&self) {
        loop {
            let back = self.shared.back.notified();
            tokio::pin!(back);
            // Registered before looking, so a return in between is not missed.
            back.as_mut().enable();
            if self.lock().store.is_some() {
                return;
            }
            back.await;
        }
    }

    /// Commit number `number` on this thread (the store must be home).
    pub fn commit_here(&self, number: u64, commit: Commit) {
        let mut state = self.home();
        let result = commit(state.store.as_ref().expect("the store is home"));
        end(&mut state, number, result);
    }

    /// Commit number `number` on a blocking thread; the store is away until
    /// it ends. Must be called inside the tokio runtime, with the store home.
    pub fn commit_away(&self, number: u64, commit: Commit) {
        let store = {
            let mut state = self.home();
            state.store.take().expect("the store is home")
        };
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in the store code must still give the store back (and
            // fail the run), or every later use would wait for it forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&store)))
                .unwrap_or_else(|_| Err(StoreError::Failed("a commit panicked".into())));
            let frees = {
                let mut state = lock(&shared.state);
                std::mem::take(&mut state.frees)
            };
            for (key, slot) in &frees {
                // A slot that cannot be given back frees itself at its expiry.
                let _ = store.free_slot(key, slot);
            }
            let mut state = lock(&shared.state);
            state.store = Some(store);
            end(&mut state, number, result);
            drop(state);
            shared.returned.notify_all();
            shared.back.notify_waiters();
        });
    }

    /// Gives a shared slot back now, or, while a commit has the store, as
    /// soon as it ends (a drop cannot wait).
    pub fn free_slot(&self, key: &str, slot: &str) {
        let mut state = self.lock();
        match &state.store {
            Some(store) => {
                let _ = store.free_slot(key, slot);
            }
            None => state.frees.push((key.to_string(), slot.to_string())),
        }
    }

    fn home(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while state.store.is_none() {
            state = self
                .shared
                .returned
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }
}

/// The store while it is home: nothing can lend it out meanwhile.
pub struct HomeStore<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for HomeStore<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.0.store.as_ref().expect("the store is home")
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn end(state: &mut State, number: u64, result: Result<(), StoreError>) {
    state.ended = state.ended.max(number);
    if let Err(e) = result {
        state.failed.get_or_insert(e);
    }
}
