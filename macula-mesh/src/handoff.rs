//! The hand-off from the driver to one consumer of an inbox: a bounded queue that the driver
//! fills many items at a time and the consumer empties all at once.
//!
//! A channel that moves one item per send and per receive pays its locking and waking for every
//! message; on a stream of small messages that was a tenth of a subscriber's time. Here the
//! driver appends what the node's inbox holds, up to the queue's room, under one lock and with
//! one wake-up, and the consumer swaps the whole queue for its own empty buffer under one lock,
//! then reads from that buffer without touching shared state.
//!
//! Bounds: at most `capacity` items queued, and at most `capacity` more in the consumer's
//! buffer (the batch it took last), so a handle holds at most twice its capacity.
//!
//! Back-pressure: when the driver finds the queue full it marks it *parked* and stops feeding
//! that inbox; the consumer, on taking a batch from a parked queue, rings the driver's doorbell,
//! and the driver feeds the inbox again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The queue's state, behind one lock.
#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// The consumer, waiting for items.
    waker: Option<Waker>,
    /// The driver stopped feeding for want of room.
    parked: bool,
    /// The feeding side is gone: nothing more will come.
    ended: bool,
    /// The consuming side is gone: nobody reads.
    closed: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves the queue consistent (every change is one
        // push, swap or flag), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue of at most `capacity` items (at least one) and its two ends.
pub(crate) fn handoff<T>(capacity: usize) -> (Feeder<T>, Taker<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            parked: false,
            ended: false,
            closed: false,
        }),
        capacity: capacity.max(1),
    });
    (
        Feeder(shared.clone()),
        Taker {
            shared,
            buffer: VecDeque::new(),
            ended: false,
        },
    )
}

/// The driver's end.
#[derive(Debug)]
pub(crate) struct Feeder<T>(Arc<Shared<T>>);

/// How a [`Feeder::feed`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    /// The source had nothing more.
    Emptied,
    /// The queue is full: it is parked until the consumer takes a batch.
    Filled,
    /// The consumer is gone.
    Gone,
}

impl<T> Feeder<T> {
    /// Items the queue takes now (0 when the consumer is gone).
    pub fn room(&self) -> usize {
        let state = self.0.lock();
        if state.closed {
            return 0;
        }
        self.0.capacity - state.items.len()
    }

    /// Whether the consumer is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }

    /// Appends `batch` (at most [`Feeder::room`] items), wakes the consumer once, and parks
    /// the queue if `parks` (the driver has more than fitted). Items the queue cannot take are
    /// dropped: the driver takes only as many as the room it read, and it is the only feeder.
    pub fn feed(&self, batch: &mut Vec<T>, parks: bool) -> Fed {
        let mut state = self.0.lock();
        if state.closed {
            batch.clear();
            return Fed::Gone;
        }
        let room = self.0.capacity - state.items.len();
        debug_assert!(batch.len() <= room, "the feeder read the room first");
        let n = batch.len().min(room);
        state.items.extend(batch.drain(..n));
        batch.clear();
        let fed = if parks || state.items.len() == self.0.capacity {
            state.parked = true;
            Fed::Filled
        } else {
            Fed::Emptied
        };
        let waker = if n > 0 { state.waker.take() } else { None };
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        fed
    }
}

impl<T> Drop for Feeder<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.ended = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The consumer's end.
#[derive(Debug)]
pub(crate) struct Taker<T> {
    shared: Arc<Shared<T>>,
    /// The batch taken last, read from the front.
    buffer: VecDeque<T>,
    ended: bool,
}

/// What [`Taker::try_take`] found.
#[derive(Debug)]
pub(crate) enum Took<T> {
    /// An item; `unparked` says the driver waits to hear that there is room again.
    Item { item: T, unparked: bool },
    /// Nothing yet.
    Empty,
    /// Nothing, ever again.
    Ended,
}

impl<T> Taker<T> {
    /// The next item if one is there.
    pub fn try_take(&mut self) -> Took<T> {
        if let Some(item) = self.buffer.pop_front() {
            return Took::Item {
                item,
                unparked: false,
            };
        }
        self.refill(None)
    }

    /// The next item, or `Pending` with the consumer's waker kept for the driver.
    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Took<T>> {
        if let Some(item) = self.buffer.pop_front() {
            return Poll::Ready(Took::Item {
                item,
                unparked: false,
            });
        }
        match self.refill(Some(cx.waker())) {
            Took::Empty => Poll::Pending,
            took => Poll::Ready(took),
        }
    }

    /// Swaps the shared queue for the (empty) buffer; with `waker`, keeps it if nothing came.
    fn refill(&mut self, waker: Option<&Waker>) -> Took<T> {
        if self.ended {
            return Took::Ended;
        }
        let mut state = self.shared.lock();
        if state.items.is_empty() {
            if state.ended {
                self.ended = true;
                return Took::Ended;
            }
            if let Some(w) = waker {
                match &mut state.waker {
                    Some(kept) if kept.will_wake(w) => {}
                    kept => *kept = Some(w.clone()),
                }
            }
            return Took::Empty;
        }
        std::mem::swap(&mut state.items, &mut self.buffer);
        let unparked = std::mem::take(&mut state.parked);
        drop(state);
        let item = self
            .buffer
            .pop_front()
            .expect("swapped in a non-empty queue");
        Took::Item { item, unparked }
    }

    /// Items this end holds: its batch and the queue.
    pub fn len(&self) -> usize {
        self.buffer.len() + self.shared.lock().items.len()
    }

    /// Stops taking: what is queued is dropped and the driver feeds no more.
    pub fn close(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.items.clear();
        state.waker = None;
        drop(state);
        self.buffer.clear();
    }
}

impl<T> Drop for Taker<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn item(t: Took<u32>) -> Option<(u32, bool)> {
        match t {
            Took::Item { item, unparked } => Some((item, unparked)),
            _ => None,
        }
    }

    #[test]
    fn items_come_in_order_in_batches_and_the_queue_holds_its_capacity() {
        let (feeder, mut taker) = handoff::<u32>(4);
        assert_eq!(feeder.room(), 4);
        let mut batch = vec![1, 2, 3];
        assert_eq!(feeder.feed(&mut batch, false), Fed::Emptied);
        assert!(batch.is_empty());
        assert_eq!(feeder.room(), 1);
        let mut batch = vec![4];
        assert_eq!(feeder.feed(&mut batch, false), Fed::Filled, "now full");
        assert_eq!(feeder.room(), 0);
        // The first take swaps the whole queue out and says the driver waits for room.
        assert_eq!(item(taker.try_take()), Some((1, true)));
        assert_eq!(feeder.room(), 4);
        assert_eq!(taker.len(), 3);
        let mut batch = vec![5, 6, 7, 8];
        assert_eq!(feeder.feed(&mut batch, false), Fed::Filled);
        assert_eq!(taker.len(), 7, "a handle holds at most twice its capacity");
        let got: Vec<u32> = std::iter::from_fn(|| item(taker.try_take()).map(|(i, _)| i)).collect();
        assert_eq!(got, [2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(taker.try_take(), Took::Empty));
        drop(feeder);
        assert!(matches!(taker.try_take(), Took::Ended));
    }

    #[test]
    fn a_waiting_consumer_is_woken_once_per_batch_and_a_gone_one_stops_the_feeder() {
        let (feeder, mut taker) = handoff::<u32>(8);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(taker.poll_take(&mut cx).is_pending());
        let mut batch = vec![1, 2, 3];
        feeder.feed(&mut batch, true);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "one wake for three items"
        );
        match taker.poll_take(&mut cx) {
            Poll::Ready(t) => assert_eq!(item(t), Some((1, true)), "parked: more waits"),
            Poll::Pending => panic!("an item was there"),
        }
        taker.close();
        assert!(feeder.is_closed());
        assert_eq!(feeder.room(), 0);
        let mut batch = vec![9];
        assert_eq!(feeder.feed(&mut batch, false), Fed::Gone);
        assert!(matches!(taker.try_take(), Took::Ended | Took::Empty));
    }
}
