//! The answer to one command: a slot the node's task fills once and one handle awaits.
//!
//! Every `Mesh` operation waits for one answer. A general channel (a queue, lists of waiting
//! senders and receivers, its own event machinery) costs an allocation and two notifications
//! per operation; with many calls in flight that was a tenth of the node's time. Here the slot
//! is one `Option` and one waker behind a lock, answered at most once.
//!
//! The sending half may be cloned (a held operation and the waiter it becomes both keep it);
//! the first answer wins and later ones are refused. The receiver learns that no answer will
//! come when every sender is gone, and the senders learn that nobody waits when the receiver is
//! gone.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

#[derive(Debug)]
struct State<T> {
    value: Option<T>,
    /// An answer was given (it may have been taken since).
    answered: bool,
    waker: Option<Waker>,
    senders: usize,
    /// The receiver is gone: nobody waits.
    abandoned: bool,
}

#[derive(Debug)]
struct Slot<T>(Mutex<State<T>>);

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every change under the lock is a single assignment: a poisoned lock is consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A slot for one answer and its two ends.
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot(Mutex::new(State {
        value: None,
        answered: false,
        waker: None,
        senders: 1,
        abandoned: false,
    })));
    (Sender(slot.clone()), Receiver(slot))
}

/// The answering end (the node's task).
#[derive(Debug)]
pub(crate) struct Sender<T>(Arc<Slot<T>>);

/// No answer came: every sender is gone without one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unanswered;

impl<T> Sender<T> {
    /// Answers, unless answered already or nobody waits (then `value` comes back).
    pub fn try_send(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = self.0.lock();
            if state.answered || state.abandoned {
                return Err(value);
            }
            state.value = Some(value);
            state.answered = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether nobody waits for the answer any more.
    pub fn is_closed(&self) -> bool {
        self.0.lock().abandoned
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders == 0 && !state.answered {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The waiting end (a `Mesh` handle).
#[derive(Debug)]
pub(crate) struct Receiver<T>(Arc<Slot<T>>);

impl<T> Receiver<T> {
    /// The answer, or [`Unanswered`] once no sender is left to give it.
    pub async fn recv(&self) -> Result<T, Unanswered> {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            if let Some(value) = state.value.take() {
                return Poll::Ready(Ok(value));
            }
            if state.answered || state.senders == 0 {
                return Poll::Ready(Err(Unanswered));
            }
            match &mut state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.abandoned = true;
        state.value = None;
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn the_first_answer_is_received_and_later_ones_are_refused() {
        let (tx, rx) = oneshot();
        let again = tx.clone();
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(again.try_send(2), Err(2));
        assert_eq!(block_on(rx.recv()), Ok(1));
        // Taken once: asking again says no answer will come, rather than waiting forever.
        assert_eq!(block_on(rx.recv()), Err(Unanswered));
    }

    #[test]
    fn the_receiver_hears_when_every_sender_is_gone_unanswered() {
        let (tx, rx) = oneshot::<u8>();
        let other = tx.clone();
        drop(tx);
        let waiting = std::thread::spawn(move || block_on(rx.recv()));
        std::thread::sleep(std::time::Duration::from_millis(10));
        drop(other);
        assert_eq!(waiting.join().unwrap(), Err(Unanswered));
    }

    #[test]
    fn an_answer_from_another_thread_wakes_the_receiver() {
        let (tx, rx) = oneshot();
        let answering = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            tx.try_send("done").unwrap();
        });
        assert_eq!(block_on(rx.recv()), Ok("done"));
        answering.join().unwrap();
    }

    #[test]
    fn senders_see_that_nobody_waits_and_keep_their_value() {
        let (tx, rx) = oneshot();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(vec![1u8]), Err(vec![1u8]));
    }
}
