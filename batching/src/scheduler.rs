//! Sharing a [`BatcherState`] between request handlers, which submit without blocking, and instance threads,
//! which block until the batcher gives them a batch.

use std::{
    sync::{
        Condvar, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    policy::BatchingPolicy,
    state::{Admitted, Batch, BatcherState, EnqueueError, Next, Payload, Rejected, Request},
};

#[derive(Debug)]
struct Shared<P> {
    state: BatcherState<P>,
    closed: bool,
    /// Instance threads blocked on `arrivals` now. A notify with nobody blocked still costs a futex system
    /// call, so submitters skip it when this is zero.
    sleeping: usize,
    /// How many of the sleepers a notify is already on its way to. Under load many requests arrive between
    /// a notify and the moment the woken instance takes the lock; the instance will find them all, so
    /// they skip their own notify (and its system call) instead of each waking an awake thread again.
    signalled: usize,
    /// How many of the sleepers wait for a queued batch's delay to end rather than for a request. An arrival
    /// that cannot complete a batch ([`BatcherState::may_send_before_delay`]) leaves them asleep: their
    /// timeout is when that batch leaves, whatever arrives before.
    delaying: usize,
    /// Instances whose thread ended after idling ([`Scheduler::next_batch_or_park`]), by id: the next
    /// request that finds no instance asleep hands one of them to the unpark hook.
    parked: Vec<usize>,
}

impl<P> Shared<P> {
    /// Claims a wake-up for an instance that sleeps with none on its way: `true` when the caller must notify.
    fn signal(&mut self) -> bool {
        let unsignalled = self.sleeping > self.signalled;
        self.signalled += usize::from(unsignalled);
        unsignalled
    }

    /// An instance has stopped sleeping, woken by a notify, a timeout or spuriously. Taking one off the
    /// notifies on their way may undercount them (a timeout took its place), which costs a redundant
    /// notify later, never a missed one.
    fn woke(&mut self) {
        self.sleeping -= 1;
        self.signalled = self.signalled.saturating_sub(1).min(self.sleeping);
    }
}

/// The queue of one model version. Handlers call [`Scheduler::submit`]; each instance thread loops on
/// [`Scheduler::next_batch`], runs the batch, and answers through [`Scheduler::deliver`].
///
/// Instances may come and go while it runs: each waits with a `retired` flag of its own, and
/// [`Scheduler::wake_all`] makes a retired instance stop at once instead of at the next request.
///
/// The lock is held only to queue a request or to decide a batch, never while a model runs.
pub struct Scheduler<P> {
    shared: Mutex<Shared<P>>,
    /// Signalled when a request arrives or the scheduler closes.
    arrivals: Condvar,
    /// The sequence number of the next batch whose responses may leave, when ordering is preserved.
    delivered: Mutex<u64>,
    /// Signalled when a batch's responses have left.
    turns: Condvar,
    preserve_ordering: bool,
    adaptive_delay: bool,
    /// Starts a thread for a parked instance ([`Scheduler::set_unpark`]); called without the lock held.
    unpark: OnceLock<Box<dyn Fn(usize) + Send + Sync>>,
}

impl<P> std::fmt::Debug for Scheduler<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("preserve_ordering", &self.preserve_ordering)
            .field("adaptive_delay", &self.adaptive_delay)
            .finish_non_exhaustive()
    }
}

impl<P: Payload> Scheduler<P> {
    /// A scheduler following `policy`.
    pub fn new(policy: BatchingPolicy) -> Self {
        Scheduler {
            preserve_ordering: policy.preserve_ordering,
            adaptive_delay: policy.adaptive_delay,
            shared: Mutex::new(Shared {
                state: BatcherState::new(policy),
                closed: false,
                sleeping: 0,
                signalled: 0,
                delaying: 0,
                parked: Vec::new(),
            }),
            arrivals: Condvar::new(),
            delivered: Mutex::new(0),
            turns: Condvar::new(),
            unpark: OnceLock::new(),
        }
    }

    /// Sets what starts a thread again for a parked instance (given its id); set once, before any instance
    /// parks. Without it no instance may park.
    pub fn set_unpark(&self, unpark: impl Fn(usize) + Send + Sync + 'static) {
        // A second hook would be a bug of the caller; the first one stays.
        let _ = self.unpark.set(Box::new(unpark));
    }

    /// Registers an instance that has no thread yet (or no longer): it starts on the first request that
    /// finds no instance asleep, or at once when requests already wait for one.
    pub fn add_parked(&self, id: usize) {
        let mut shared = self.lock();
        shared.parked.push(id);
        let start = self.unpark_if_needed(&mut shared);
        drop(shared);
        self.start(start);
    }

    /// Registers an instance like [`Scheduler::add_parked`], but as the last one to start: one that is slower
    /// to start than the others (its session is not open yet) runs only when they are all busy.
    pub fn add_parked_last(&self, id: usize) {
        let mut shared = self.lock();
        shared.parked.insert(0, id);
        let start = self.unpark_if_needed(&mut shared);
        drop(shared);
        self.start(start);
    }

    /// Forgets a parked instance being removed; false when it is not parked (its thread runs, or a
    /// request is starting one for it).
    pub fn forget_parked(&self, id: usize) -> bool {
        let mut shared = self.lock();
        let before = shared.parked.len();
        shared.parked.retain(|parked| *parked != id);
        before != shared.parked.len()
    }

    /// With requests queued and no instance asleep to take them, the parked instance to start, taken off
    /// the list. Called with the lock held; [`Scheduler::start`] runs the hook once it is released.
    fn unpark_if_needed(&self, shared: &mut Shared<P>) -> Option<usize> {
        if shared.sleeping > 0 || shared.state.is_empty() || self.unpark.get().is_none() {
            return None;
        }
        shared.parked.pop()
    }

    fn start(&self, id: Option<usize>) {
        if let (Some(id), Some(unpark)) = (id, self.unpark.get()) {
            unpark(id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<P>> {
        // The state holds no invariant a panicking holder could break half-way: keep serving.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a request without blocking on anything but the brief state lock.
    pub fn submit(&self, request: Request<P>) -> Result<Admitted, Rejected<P>> {
        self.enqueue(request, false).map(|(admitted, _)| admitted)
    }

    /// Queues a request like [`Scheduler::submit`], except that a request that finds the queue otherwise
    /// empty and an instance idle leaves that instance asleep, and `true` comes back: the caller may then run
    /// the request on its own thread ([`Scheduler::take_ready`]) instead of paying for a wake-up of the
    /// instance and another of the caller. After `true`, the caller must call [`Scheduler::wake_for_queued`]
    /// once it is done (or has given up), so that nothing stays queued while every instance sleeps.
    pub fn submit_alone(&self, request: Request<P>) -> Result<(Admitted, bool), Rejected<P>> {
        self.enqueue(request, true)
    }

    fn enqueue(&self, request: Request<P>, may_run_here: bool) -> Result<(Admitted, bool), Rejected<P>> {
        let mut shared = self.lock();
        if shared.closed {
            return Err(Rejected {
                payload: request.payload,
                error: EnqueueError::Closed,
            });
        }
        let admitted = shared.state.enqueue(request, Instant::now())?;
        // A parked instance is idle too: its engine is free for the caller to run a lone request on.
        let idle = shared.sleeping > shared.signalled || !shared.parked.is_empty();
        let alone = may_run_here && idle && shared.state.len() == 1;
        let needed = shared.sleeping > shared.delaying || shared.state.may_send_before_delay();
        let notify = !alone && needed && shared.signal();
        let start = if alone {
            None
        } else {
            self.unpark_if_needed(&mut shared)
        };
        drop(shared);
        if notify {
            self.arrivals.notify_one();
        }
        self.start(start);
        Ok((admitted, alone))
    }

    /// The batch the policy runs now, formed as an instance would form it, for a caller that runs it on its
    /// own thread; `None` when the policy would wait (a queue delay) or nothing is queued. Like every batch,
    /// it must be delivered with [`Scheduler::deliver`] as soon as it has run.
    pub fn take_ready(&self) -> Option<Batch<P>> {
        let mut shared = self.lock();
        loop {
            match shared.state.next_batch(Instant::now()) {
                // Every request picked was withdrawn at the last moment: decide again.
                Next::Batch(batch) if batch.items.is_empty() => continue,
                Next::Batch(batch) => return Some(batch),
                Next::WaitUntil(_) | Next::Idle => return None,
            }
        }
    }

    /// Wakes an idle instance when requests wait, or starts a parked one when none is asleep: what
    /// [`Scheduler::submit_alone`] left undone.
    pub fn wake_for_queued(&self) {
        let mut shared = self.lock();
        let wake = !shared.state.is_empty() && shared.signal();
        let start = self.unpark_if_needed(&mut shared);
        drop(shared);
        if wake {
            self.arrivals.notify_one();
        }
        self.start(start);
    }

    /// Blocks until there is a batch to run; `None` once the scheduler is closed and its queue drained, or
    /// as soon as `retired` is set (an instance being removed stops between batches).
    pub fn next_batch(&self, retired: &AtomicBool) -> Option<Batch<P>> {
        self.next_batch_or_park(retired, None)
    }

    /// Like [`Scheduler::next_batch`], and, with `park` = `(id, after)`, also `None` once the queue has been
    /// empty for `after`: the instance is then parked under `id`, and its thread should end; the unpark
    /// hook ([`Scheduler::set_unpark`]) starts one again when a request needs it. An idle model thus holds
    /// no thread, whatever its instance count.
    pub fn next_batch_or_park(
        &self,
        retired: &AtomicBool,
        park: Option<(usize, Duration)>,
    ) -> Option<Batch<P>> {
        let mut shared = self.lock();
        shared.state.instance_waiting();
        let park = park.filter(|_| self.unpark.get().is_some());
        let mut idle_since: Option<Instant> = None;
        let batch = loop {
            if retired.load(Ordering::Acquire) {
                break None;
            }
            let now = Instant::now();
            match shared.state.next_batch(now) {
                // Every request picked was withdrawn at the last moment: decide again.
                Next::Batch(batch) if batch.items.is_empty() => continue,
                Next::Batch(batch) => break Some(batch),
                Next::WaitUntil(at) => {
                    idle_since = None;
                    let wait = at.saturating_duration_since(now);
                    shared.sleeping += 1;
                    shared.delaying += 1;
                    shared = self
                        .arrivals
                        .wait_timeout(shared, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    shared.delaying -= 1;
                    shared.woke();
                }
                Next::Idle if shared.closed => break None,
                Next::Idle => match park {
                    None => {
                        shared.sleeping += 1;
                        shared = self.arrivals.wait(shared).unwrap_or_else(PoisonError::into_inner);
                        shared.woke();
                    }
                    Some((id, after)) => {
                        let since = *idle_since.get_or_insert(now);
                        let left = after.saturating_sub(now.saturating_duration_since(since));
                        if left.is_zero() {
                            shared.parked.push(id);
                            break None;
                        }
                        shared.sleeping += 1;
                        shared = self
                            .arrivals
                            .wait_timeout(shared, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        shared.woke();
                    }
                },
            }
        };
        shared.state.instance_not_waiting();
        // Another instance may be able to start on what is left: an idle one, or a parked one. An instance
        // that stops (retired) may have taken the wake-up meant for the requests still queued: pass it on.
        let more = !shared.state.is_empty() && shared.signal();
        let start = self.unpark_if_needed(&mut shared);
        drop(shared);
        if more {
            self.arrivals.notify_one();
        }
        self.start(start);
        batch
    }

    /// Sends a batch's responses with `send`: at once, or, when the policy preserves ordering, after every
    /// batch formed before it. Every batch from [`Scheduler::next_batch`] must be delivered exactly once, as
    /// soon as it has run: the adaptive delay counts the batches still running.
    pub fn deliver(&self, sequence: u64, send: impl FnOnce()) {
        if self.adaptive_delay {
            // Before any response leaves, so that a client's next request never finds this batch running.
            self.lock().state.batch_finished();
        }
        if !self.preserve_ordering {
            send();
            return;
        }
        let mut next = self.delivered.lock().unwrap_or_else(PoisonError::into_inner);
        while *next != sequence {
            next = self.turns.wait(next).unwrap_or_else(PoisonError::into_inner);
        }
        send();
        *next += 1;
        drop(next);
        self.turns.notify_all();
    }

    /// Stops taking requests. Queued ones still run; instance threads stop once the queue is drained.
    pub fn close(&self) {
        let mut shared = self.lock();
        shared.closed = true;
        shared.signalled = shared.sleeping;
        drop(shared);
        self.arrivals.notify_all();
    }

    /// Wakes every waiting instance so that those whose `retired` flag was just set stop.
    pub fn wake_all(&self) {
        let mut shared = self.lock();
        shared.signalled = shared.sleeping;
        self.arrivals.notify_all();
    }

    /// Requests waiting now (withdrawn ones not yet cleared included).
    pub fn queued(&self) -> usize {
        self.lock().state.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread, time::Duration};

    use super::*;
    use crate::{BatchingPolicy, Ticket};

    #[derive(Debug)]
    struct Item;

    impl Payload for Item {
        fn batches_with(&self, _: &Self) -> bool {
            true
        }
    }

    fn request() -> Request<Item> {
        Request {
            payload: Item,
            rows: 1,
            priority: 0,
            timeout: None,
            ticket: Ticket::new(),
        }
    }

    #[test]
    fn requests_that_arrive_before_a_notified_instance_wakes_do_not_notify_it_again() {
        let scheduler = Scheduler::<Item>::new(BatchingPolicy::greedy(8));
        // As an instance blocked in next_batch leaves it, without a thread: notifies go to nobody.
        scheduler.lock().sleeping = 1;
        for _ in 0..3 {
            assert!(scheduler.submit(request()).is_ok());
        }
        assert_eq!(scheduler.lock().signalled, 1, "one notify for three requests");
        scheduler.lock().woke();
        let shared = scheduler.lock();
        assert_eq!((shared.sleeping, shared.signalled), (0, 0));
    }

    #[test]
    fn an_instance_woken_by_its_timeout_leaves_the_next_request_a_notify_to_send() {
        let scheduler = Scheduler::<Item>::new(BatchingPolicy::greedy(8));
        {
            let mut shared = scheduler.lock();
            shared.sleeping = 2;
            assert!(shared.signal(), "the first of two sleepers is notified");
            // The other sleeper's timeout ran out first: it counts as the notified one.
            shared.woke();
            assert!(shared.signal(), "the one still asleep gets a notify of its own");
            assert!(!shared.signal(), "and only one");
        }
    }

    fn delayed(max_batch_size: usize, delay: Duration) -> BatchingPolicy {
        BatchingPolicy {
            max_queue_delay: delay,
            ..BatchingPolicy::greedy(max_batch_size)
        }
    }

    #[test]
    fn an_instance_waiting_out_a_delay_is_woken_only_by_the_request_that_fills_the_batch() {
        for adaptive_delay in [false, true] {
            let policy = BatchingPolicy {
                adaptive_delay,
                ..delayed(4, Duration::from_secs(60))
            };
            only_the_filling_request_wakes(&Scheduler::<Item>::new(policy));
        }
    }

    /// Under either delay, the adaptive one included (asleep until the time it chose to wait for more).
    fn only_the_filling_request_wakes(scheduler: &Scheduler<Item>) {
        assert!(scheduler.submit(request()).is_ok());
        // As an instance asleep until that request's delay ends leaves it, without a thread.
        {
            let mut shared = scheduler.lock();
            shared.sleeping = 1;
            shared.delaying = 1;
        }
        for _ in 0..2 {
            assert!(scheduler.submit(request()).is_ok());
            assert_eq!(scheduler.lock().signalled, 0, "no full batch yet: left asleep");
        }
        assert!(scheduler.submit(request()).is_ok());
        assert_eq!(scheduler.lock().signalled, 1, "the fourth row fills the batch");
    }

    #[test]
    fn a_full_batch_leaves_long_before_its_delay_ends() {
        let scheduler = Arc::new(Scheduler::<Item>::new(delayed(3, Duration::from_secs(600))));
        let (sent, batch_size) = std::sync::mpsc::channel();
        let instance = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || {
                let batch = scheduler.next_batch(&AtomicBool::new(false));
                sent.send(batch.map(|b| b.items.len())).expect("test waiting");
            })
        };
        assert!(scheduler.submit(request()).is_ok());
        // Let the instance start waiting out the delay of the first request before the others arrive.
        while scheduler.lock().delaying == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(scheduler.submit(request()).is_ok());
        assert!(scheduler.submit(request()).is_ok());
        let left = batch_size.recv_timeout(Duration::from_secs(30));
        scheduler.close();
        assert_eq!(
            left,
            Ok(Some(3)),
            "the full batch left without waiting out its delay"
        );
        instance.join().expect("instance");
    }

    #[test]
    fn no_request_is_stranded_while_instances_sleep_and_wake_under_many_submitters() {
        every_request_reaches_an_instance(BatchingPolicy::greedy(4));
    }

    #[test]
    fn no_request_is_stranded_while_instances_wait_out_delays_under_many_submitters() {
        every_request_reaches_an_instance(delayed(8, Duration::from_micros(300)));
    }

    fn every_request_reaches_an_instance(policy: BatchingPolicy) {
        let scheduler = Arc::new(Scheduler::<Item>::new(policy));
        let retired = Arc::new(AtomicBool::new(false));
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let instances: Vec<_> = (0..2)
            .map(|_| {
                let (scheduler, retired, served) =
                    (Arc::clone(&scheduler), Arc::clone(&retired), Arc::clone(&served));
                thread::spawn(move || {
                    while let Some(batch) = scheduler.next_batch(&retired) {
                        served.fetch_add(batch.items.len(), Ordering::SeqCst);
                        scheduler.deliver(batch.sequence, || {});
                    }
                })
            })
            .collect();
        let submitters: Vec<_> = (0..4)
            .map(|_| {
                let scheduler = Arc::clone(&scheduler);
                thread::spawn(move || {
                    for i in 0..500 {
                        assert!(scheduler.submit(request()).is_ok());
                        if i % 50 == 0 {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for submitter in submitters {
            submitter.join().expect("submitter");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while served.load(Ordering::SeqCst) < 2000 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            served.load(Ordering::SeqCst),
            2000,
            "every request reached an instance"
        );
        scheduler.close();
        for instance in instances {
            instance.join().expect("instance");
        }
    }

    #[test]
    fn a_closed_scheduler_drains_its_queue_then_stops_its_instances() {
        let scheduler = Scheduler::new(BatchingPolicy::greedy(8));
        assert!(scheduler.submit(request()).is_ok());
        scheduler.close();
        assert!(scheduler.submit(request()).is_err(), "closed to new requests");
        let running = AtomicBool::new(false);
        let batch = scheduler
            .next_batch(&running)
            .expect("the queued request still runs");
        assert_eq!(batch.items.len(), 1);
        assert!(scheduler.next_batch(&running).is_none());
    }

    #[test]
    fn a_retired_instance_stops_while_waiting() {
        let scheduler = Arc::new(Scheduler::<Item>::new(BatchingPolicy::greedy(8)));
        let retired = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (scheduler, retired) = (Arc::clone(&scheduler), Arc::clone(&retired));
            thread::spawn(move || scheduler.next_batch(&retired).is_none())
        };
        thread::sleep(Duration::from_millis(20));
        retired.store(true, Ordering::Release);
        scheduler.wake_all();
        assert!(
            waiter.join().expect("instance thread"),
            "it stopped without a batch"
        );
    }

    #[test]
    fn under_the_adaptive_delay_one_client_at_a_time_never_waits() {
        // One client sending each request 50 ms after the previous was answered, against a 10 s delay.
        // Delivering a batch tells the batcher it no longer runs, so every request arrives alone; were that
        // lost, the batcher would count later requests as company and wait 4 gaps (200 ms) for more.
        let policy = BatchingPolicy {
            max_queue_delay: Duration::from_secs(10),
            adaptive_delay: true,
            ..BatchingPolicy::greedy(8)
        };
        let scheduler = Scheduler::new(policy);
        let running = AtomicBool::new(false);
        for _ in 0..8 {
            assert!(scheduler.submit(request()).is_ok());
            let asked = Instant::now();
            let batch = scheduler.next_batch(&running).expect("a batch");
            assert!(
                asked.elapsed() < Duration::from_millis(100),
                "waited {:?}",
                asked.elapsed()
            );
            scheduler.deliver(batch.sequence, || {});
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_lone_request_leaves_an_idle_instance_asleep_for_its_caller_to_run() {
        let scheduler = Arc::new(Scheduler::<Item>::new(BatchingPolicy::greedy(8)));
        let (_, alone) = scheduler.submit_alone(request()).expect("queued");
        assert!(!alone, "no instance is idle yet: the caller must not run it");
        let running = AtomicBool::new(false);
        scheduler.deliver(scheduler.next_batch(&running).expect("batch").sequence, || {});
        let instance = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || {
                let running = AtomicBool::new(false);
                scheduler.next_batch(&running).map(|batch| batch.items.len())
            })
        };
        while scheduler.lock().sleeping == 0 {
            thread::yield_now();
        }
        let (_, alone) = scheduler.submit_alone(request()).expect("queued");
        assert!(
            alone,
            "an idle instance and an empty queue: the caller may run it"
        );
        thread::sleep(Duration::from_millis(20));
        assert!(!instance.is_finished(), "the instance was left asleep");
        let batch = scheduler.take_ready().expect("a batch to run here");
        assert_eq!(batch.items.len(), 1);
        scheduler.deliver(batch.sequence, || {});
        assert!(scheduler.take_ready().is_none(), "nothing left");
        scheduler.wake_for_queued();

        // A second request while the first waits is not alone, and wakes the instance at once.
        assert!(scheduler.submit_alone(request()).expect("queued").1);
        let (_, alone) = scheduler.submit_alone(request()).expect("queued");
        assert!(!alone);
        assert_eq!(
            instance.join().expect("instance"),
            Some(2),
            "the instance took both"
        );
    }

    #[test]
    fn a_caller_that_does_not_run_its_request_hands_it_to_an_instance() {
        // The policy waits (a queue delay), so the caller finds nothing ready and must wake the instance.
        let policy = BatchingPolicy {
            max_queue_delay: Duration::from_millis(30),
            ..BatchingPolicy::greedy(8)
        };
        let scheduler = Arc::new(Scheduler::<Item>::new(policy));
        let instance = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || {
                let running = AtomicBool::new(false);
                scheduler.next_batch(&running).map(|batch| batch.items.len())
            })
        };
        while scheduler.lock().sleeping == 0 {
            thread::yield_now();
        }
        assert!(scheduler.submit_alone(request()).expect("queued").1);
        assert!(scheduler.take_ready().is_none(), "the delay has not passed");
        scheduler.wake_for_queued();
        assert_eq!(instance.join().expect("instance"), Some(1));
    }

    #[test]
    fn an_idle_instance_parks_and_the_next_request_starts_it_again() {
        let scheduler = Arc::new(Scheduler::<Item>::new(BatchingPolicy::greedy(8)));
        let started = Arc::new(Mutex::new(Vec::new()));
        {
            let started = Arc::clone(&started);
            scheduler.set_unpark(move |id| started.lock().expect("started").push(id));
        }
        let retired = AtomicBool::new(false);
        let idled = Instant::now();
        assert!(
            scheduler
                .next_batch_or_park(&retired, Some((7, Duration::from_millis(30))))
                .is_none(),
            "nothing came: the instance parks"
        );
        assert!(
            idled.elapsed() >= Duration::from_millis(30),
            "after idling, not before"
        );
        assert!(started.lock().expect("started").is_empty());
        assert!(scheduler.submit(request()).is_ok());
        assert_eq!(*started.lock().expect("started"), [7], "the request starts it");
        assert!(scheduler.submit(request()).is_ok());
        assert_eq!(started.lock().expect("started").len(), 1, "started once");
        let batch = scheduler
            .next_batch_or_park(&retired, Some((7, Duration::from_millis(30))))
            .expect("the started instance finds the requests");
        assert_eq!(batch.items.len(), 2);
    }

    #[test]
    fn a_parked_instance_leaves_a_lone_request_to_its_caller_and_is_forgotten_when_removed() {
        let scheduler = Scheduler::<Item>::new(BatchingPolicy::greedy(8));
        let started = Arc::new(Mutex::new(Vec::new()));
        {
            let started = Arc::clone(&started);
            scheduler.set_unpark(move |id| started.lock().expect("started").push(id));
        }
        scheduler.add_parked(1);
        scheduler.add_parked(2);
        let (_, alone) = scheduler.submit_alone(request()).expect("queued");
        assert!(
            alone,
            "a parked instance is idle: the caller may run the request itself"
        );
        assert!(started.lock().expect("started").is_empty());
        scheduler.wake_for_queued();
        assert_eq!(
            started.lock().expect("started").len(),
            1,
            "the caller did not run it: one parked instance starts"
        );
        let left = if started.lock().expect("started")[0] == 1 {
            2
        } else {
            1
        };
        assert!(scheduler.forget_parked(left));
        assert!(!scheduler.forget_parked(left), "forgotten already");
        assert!(scheduler.submit(request()).is_ok());
        assert_eq!(
            started.lock().expect("started").len(),
            1,
            "no parked instance is left"
        );
    }

    #[test]
    fn a_retired_instance_hands_the_queue_to_a_parked_one() {
        // The wake-up of a request went to an instance that was being retired; the other instance was
        // parked. Stopping, the retired one must start it, or the request waits forever.
        let scheduler = Arc::new(Scheduler::<Item>::new(BatchingPolicy::greedy(8)));
        let started = Arc::new(Mutex::new(Vec::new()));
        {
            let started = Arc::clone(&started);
            scheduler.set_unpark(move |id| started.lock().expect("started").push(id));
        }
        scheduler.add_parked(2);
        let retired = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (scheduler, retired) = (Arc::clone(&scheduler), Arc::clone(&retired));
            thread::spawn(move || {
                scheduler
                    .next_batch_or_park(&retired, Some((1, Duration::from_secs(60))))
                    .is_none()
            })
        };
        while scheduler.lock().sleeping == 0 {
            thread::yield_now();
        }
        // Retired under the lock, so that the instance sees the flag when the request wakes it.
        let shared = scheduler.lock();
        retired.store(true, Ordering::Release);
        drop(shared);
        assert!(scheduler.submit(request()).is_ok());
        assert!(waiter.join().expect("instance"), "the retired instance stops");
        assert_eq!(
            *started.lock().expect("started"),
            [2],
            "and starts the parked one"
        );
    }

    #[test]
    fn ordered_delivery_waits_for_earlier_batches() {
        let mut policy = BatchingPolicy::greedy(1);
        policy.preserve_ordering = true;
        let scheduler = Arc::new(Scheduler::new(policy));
        for _ in 0..2 {
            assert!(scheduler.submit(request()).is_ok());
        }
        let running = AtomicBool::new(false);
        let first = scheduler.next_batch(&running).expect("first");
        let second = scheduler.next_batch(&running).expect("second");
        let order = Arc::new(Mutex::new(Vec::new()));
        let late = {
            let (scheduler, order) = (Arc::clone(&scheduler), Arc::clone(&order));
            thread::spawn(move || scheduler.deliver(second.sequence, || order.lock().expect("order").push(1)))
        };
        thread::sleep(Duration::from_millis(20));
        assert!(
            order.lock().expect("order").is_empty(),
            "the second batch waits for the first"
        );
        scheduler.deliver(first.sequence, || order.lock().expect("order").push(0));
        late.join().expect("deliverer");
        assert_eq!(*order.lock().expect("order"), [0, 1]);
    }
}
