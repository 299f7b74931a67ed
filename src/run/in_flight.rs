//! The calls a region or a loop has in flight: a `FuturesUnordered`, polled
//! so that its wake-ups of its own task stay inside it.
//!
//! `FuturesUnordered` wakes the task polling it whenever one poll went
//! through every future it holds, so that futures waking one another cannot
//! keep it from returning. For a set of one that is every poll, and for a
//! loop branch's region its first. A loop's own set takes a branch that
//! woke itself so for a branch that yields, and after two of them it
//! returns to the event loop. A 1,000-wide fan-out of HTTP/2 calls went out
//! that way in 500 writes of two requests each, a turn of the event loop
//! between every two, and took ~14 ms from the first request to reach the
//! server to the last (bare reqwest: ~5 ms).
//!
//! So the set is polled with a waker of its own. A wake-up that comes while
//! the set is being polled is answered as an executor answers a task woken
//! while it runs: the set is polled once more, at once. A set that asks
//! again in that second poll has futures that really yield, and its task is
//! woken. Any wake-up outside a poll goes to the task unchanged.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, Stream};
use futures_util::task::{waker_ref, ArcWake, AtomicWaker};

pub(crate) struct InFlight<F> {
    futures: FuturesUnordered<F>,
    wake: Arc<SetWake>,
}

/// The waker the set's futures see.
struct SetWake {
    /// While the set is being polled: wake-ups are only noted.
    polling: AtomicBool,
    /// A wake-up came while the set was being polled.
    woken: AtomicBool,
    /// The task that polls the set.
    task: AtomicWaker,
}

impl ArcWake for SetWake {
    fn wake_by_ref(wake: &Arc<Self>) {
        // Noted before `polling` is read, and read after `polling` is
        // cleared (both sequentially consistent): a wake-up racing the end
        // of a poll is either seen by that poll or passed to the task.
        wake.woken.store(true, Ordering::SeqCst);
        if !wake.polling.load(Ordering::SeqCst) {
            wake.task.wake();
        }
    }
}

impl<F: Future + Unpin> InFlight<F> {
    pub(crate) fn new() -> Self {
        InFlight {
            futures: FuturesUnordered::new(),
            wake: Arc::new(SetWake {
                polling: AtomicBool::new(false),
                woken: AtomicBool::new(false),
                task: AtomicWaker::new(),
            }),
        }
    }

    pub(crate) fn push(&mut self, future: F) {
        self.futures.push(future);
    }

    pub(crate) fn len(&self) -> usize {
        self.futures.len()
    }

    /// The output of the next future to end; `None` once none is in flight.
    pub(crate) async fn next(&mut self) -> Option<F::Output> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// One poll of the set, without waiting: the output of a future that
    /// ended (`Some(None)` once none is in flight), or `None` when none has.
    /// The futures pushed since the last poll get their first poll here.
    pub(crate) async fn next_now(&mut self) -> Option<Option<F::Output>> {
        poll_fn(|cx| match self.poll_next(cx) {
            Poll::Ready(ended) => Poll::Ready(Some(ended)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        self.wake.task.register(cx.waker());
        let waker = waker_ref(&self.wake);
        let mut inner = Context::from_waker(&waker);
        for _ in 0..2 {
            self.wake.polling.store(true, Ordering::SeqCst);
            let polled = Pin::new(&mut self.futures).poll_next(&mut inner);
            self.wake.polling.store(false, Ordering::SeqCst);
            let woken = self.wake.woken.swap(false, Ordering::SeqCst);
            // Ready, the caller polls again for the next; the set keeps
            // which of its futures were woken.
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::{self, LocalBoxFuture};
    use futures_util::FutureExt;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts the wake-ups of the task that polls the set.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn polled<F: Future + Unpin>(
        set: &mut InFlight<F>,
        count: &Arc<Count>,
    ) -> Poll<Option<F::Output>> {
        let waker = Arc::clone(count).into();
        set.poll_next(&mut Context::from_waker(&waker))
    }

    #[test]
    fn futures_that_wait_leave_the_task_asleep() {
        // A plain FuturesUnordered wakes its task here: every future it
        // holds was polled.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let mut set: InFlight<future::Pending<()>> = InFlight::new();
        set.push(future::pending());
        assert!(polled(&mut set, &count).is_pending());
        set.push(future::pending());
        set.push(future::pending());
        assert!(polled(&mut set, &count).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_yielding_still_yields_to_the_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let polls = Rc::new(Cell::new(0));
        let mut set: InFlight<LocalBoxFuture<'_, ()>> = InFlight::new();
        let seen = polls.clone();
        set.push(
            future::poll_fn(move |cx| {
                seen.set(seen.get() + 1);
                cx.waker().wake_by_ref();
                Poll::<()>::Pending
            })
            .boxed_local(),
        );
        assert!(polled(&mut set, &count).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(polls.get() <= 2, "and the future polled at most twice");
    }

    #[test]
    fn next_now_polls_once_and_never_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
            let polled = Rc::new(Cell::new(false));
            let seen = polled.clone();
            let mut set: InFlight<LocalBoxFuture<'_, u8>> = InFlight::new();
            set.push(
                async move {
                    seen.set(true);
                    rx.await.expect("sent")
                }
                .boxed_local(),
            );
            assert_eq!(set.next_now().await, None, "nothing has ended");
            assert!(polled.get(), "the future pushed had its first poll");
            tx.send(7).expect("the receiver waits");
            assert_eq!(set.next_now().await, Some(Some(7)));
            assert_eq!(set.next_now().await, Some(None), "none in flight");
        });
    }

    #[test]
    fn a_wake_up_from_outside_a_poll_reaches_the_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut set: InFlight<LocalBoxFuture<'_, u8>> = InFlight::new();
        set.push(rx.map(|r| r.expect("sent")).boxed_local());
        assert!(polled(&mut set, &count).is_pending());
        tx.send(7).expect("the receiver waits");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(polled(&mut set, &count), Poll::Ready(Some(7)));
        assert_eq!(polled(&mut set, &count), Poll::Ready(None));
    }
}
