//! Background tasks: the one shape every thread of the app has (the worker, the loader, the
//! robustness curve, the file dialogs, the writer). A named thread waits for requests; each time
//! it wakes it takes every request waiting, so a handler can run only the newest (worker, loader)
//! or each in turn (writer); it sends replies over a channel and wakes the UI, which polls them
//! once per frame and never waits. Dropping the handle closes the request channel: the thread ends
//! after the request it is running, and nobody joins it, so the UI never waits for a thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::Duration;

/// Called whenever a reply is ready (the app passes `ctx.request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The task's thread has stopped (it panicked, or its handler gave up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {0} thread stopped")]
pub struct Stopped(pub &'static str);

/// What a task's handler replies through.
pub struct Replier<Rep> {
    tx: Sender<Rep>,
    wake: Waker,
}

impl<Rep> Replier<Rep> {
    /// Sends `reply` and wakes the UI. `false` once the app has dropped the task: the handler
    /// should stop.
    pub fn send(&self, reply: Rep) -> bool {
        let sent = self.tx.send(reply).is_ok();
        if sent {
            (self.wake)();
        }
        sent
    }
}

/// The app's handle on one background thread: requests of type `Req` in, replies `Rep` out.
pub struct Task<Req, Rep> {
    name: &'static str,
    requests: Sender<Req>,
    replies: Receiver<Rep>,
    /// Requests sent and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
}

impl<Req: Send + 'static, Rep: Send + 'static> Task<Req, Rep> {
    /// Starts the thread `name`. Each time requests are waiting, `handle` gets all of them
    /// (oldest first) and a [`Replier`]; it returns `false` to end the thread.
    pub fn spawn(
        name: &'static str,
        wake: Waker,
        mut handle: impl FnMut(Vec<Req>, &Replier<Rep>) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let (req_tx, req_rx) = channel::<Req>();
        let (rep_tx, rep_rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let replier = Replier { tx: rep_tx, wake };
                while let Ok(first) = req_rx.recv() {
                    let batch: Vec<Req> = std::iter::once(first).chain(req_rx.try_iter()).collect();
                    taken.fetch_sub(batch.len(), Ordering::Relaxed);
                    if !handle(batch, &replier) {
                        break;
                    }
                }
            })?;
        Ok(Self {
            name,
            requests: req_tx,
            replies: rep_rx,
            queued,
        })
    }

    /// Queues `req`. A thread that has stopped is reported by the next [`Self::poll`].
    pub fn send(&self, req: Req) {
        // Counted before the send: the thread may take the request before this call returns.
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.requests.send(req).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Requests waiting for the thread (not counting the one it is running).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The next reply, if one is waiting; `Err` when the thread has stopped and sent everything.
    pub fn poll(&self) -> Result<Option<Rep>, Stopped> {
        match self.replies.try_recv() {
            Ok(r) => Ok(Some(r)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Stopped(self.name)),
        }
    }

    /// Every reply waiting, and whether the thread has stopped.
    pub fn drain(&self) -> (Vec<Rep>, Option<Stopped>) {
        let mut out = vec![];
        loop {
            match self.poll() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// Waits up to `timeout` for the next reply (tests and headless use).
    pub fn wait(&self, timeout: Duration) -> Result<Option<Rep>, Stopped> {
        match self.replies.recv_timeout(timeout) {
            Ok(r) => Ok(Some(r)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Stopped(self.name)),
        }
    }
}

/// The newest of a batch of requests (what newest-wins handlers run).
pub fn newest<T>(batch: Vec<T>) -> Option<T> {
    batch.into_iter().next_back()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn noop() -> Waker {
        Arc::new(|| {})
    }

    #[test]
    fn replies_arrive_in_order_and_wake_the_ui() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let wake: Waker = Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let task = Task::spawn("test-echo", wake, |batch: Vec<u32>, r: &Replier<u32>| {
            batch.into_iter().all(|x| r.send(x * 2))
        })
        .unwrap();
        for x in 0..5 {
            task.send(x);
        }
        let mut got = vec![];
        while got.len() < 5 {
            got.push(task.wait(Duration::from_secs(10)).unwrap().unwrap());
        }
        assert_eq!(got, vec![0, 2, 4, 6, 8]);
        // The wake follows each send, so the last one may land just after the reply.
        let t = std::time::Instant::now();
        while woken.load(Ordering::Relaxed) < 5 && t.elapsed() < Duration::from_secs(10) {
            std::thread::yield_now();
        }
        assert_eq!(woken.load(Ordering::Relaxed), 5);
        assert_eq!(task.queued(), 0);
    }

    #[test]
    fn a_busy_thread_sees_the_waiting_requests_as_one_batch() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let (started_tx, started) = channel();
        let task = Task::spawn("test-batch", noop(), move |batch: Vec<u32>, r| {
            let _ = started_tx.send(());
            let _wait = g.lock();
            r.send(batch)
        })
        .unwrap();
        task.send(1);
        // The thread takes 1 and blocks on the gate; 2, 3 and 4 wait in the queue.
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        for x in 2..5 {
            task.send(x);
        }
        assert_eq!(task.queued(), 3);
        drop(held);
        let first = task.wait(Duration::from_secs(10)).unwrap().unwrap();
        let second = task.wait(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(first, vec![1]);
        assert_eq!(newest(second), Some(4));
    }

    #[test]
    fn a_thread_that_panics_is_reported() {
        let task: Task<u32, u32> =
            Task::spawn("test-panic", noop(), |_, _| panic!("boom")).unwrap();
        task.send(1);
        assert_eq!(
            task.wait(Duration::from_secs(10)).map(|_| ()),
            Err(Stopped("test-panic"))
        );
    }
}
