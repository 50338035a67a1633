use crossbeam_channel::{Receiver, Sender, TrySendError};

/// A unit of work queued for a model instance.
///
/// The queue asks a job whether it is still wanted just before handing it out, so that a request whose
/// client disconnected or whose deadline passed never reaches the model.
pub trait Job: Send {
    /// True when nobody waits for this job's result any more.
    fn is_abandoned(&self) -> bool;
}

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue holds its maximum number of jobs; the caller should shed the request.
    #[error("the queue is full ({capacity} requests waiting)")]
    Full {
        /// How many jobs the queue holds at most.
        capacity: usize,
    },
    /// Every instance has stopped, so nothing would ever take the job.
    #[error("the queue is closed")]
    Closed,
}

/// A bounded multi-producer, multi-consumer queue between the request front end and model instances.
///
/// Producers never block: [`WorkQueue::submit`] fails fast when the queue is full. Consumers block in
/// [`Consumer::next`] on their own threads, which is why this is a crossbeam channel and not a tokio one.
#[derive(Debug)]
pub struct WorkQueue<J> {
    sender: Sender<J>,
    receiver: Receiver<J>,
    capacity: usize,
}

impl<J: Job> WorkQueue<J> {
    /// Creates a queue that holds at most `capacity` waiting jobs (at least one).
    pub fn bounded(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        Self {
            sender,
            receiver,
            capacity,
        }
    }

    /// Queues a job without blocking, giving it back with the reason when it cannot be queued.
    pub fn submit(&self, job: J) -> Result<(), (J, QueueError)> {
        self.sender.try_send(job).map_err(|error| match error {
            TrySendError::Full(job) => (
                job,
                QueueError::Full {
                    capacity: self.capacity,
                },
            ),
            TrySendError::Disconnected(job) => (job, QueueError::Closed),
        })
    }

    /// How many jobs wait now.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// True when no job waits.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// A handle for consumers only: instance threads hold this, so that the queue closes when the last
    /// producer handle is dropped even while instances are still waiting on it.
    pub fn consumer(&self) -> Consumer<J> {
        Consumer {
            receiver: self.receiver.clone(),
        }
    }
}

/// The consuming side of a [`WorkQueue`], held by model instances.
#[derive(Debug)]
pub struct Consumer<J> {
    receiver: Receiver<J>,
}

impl<J: Job> Consumer<J> {
    /// Blocks until a job that is still wanted arrives; `None` once all producers are gone and the queue is
    /// drained.
    pub fn next(&self) -> Option<J> {
        self.receiver.iter().find(|job| !job.is_abandoned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    struct TestJob {
        id: u32,
        abandoned: Arc<AtomicBool>,
    }

    impl Job for TestJob {
        fn is_abandoned(&self) -> bool {
            self.abandoned.load(Ordering::Relaxed)
        }
    }

    fn job(id: u32) -> TestJob {
        TestJob {
            id,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn jobs_come_out_in_arrival_order() {
        let queue = WorkQueue::bounded(4);
        for id in 0..3 {
            assert!(queue.submit(job(id)).is_ok());
        }
        let consumer = queue.consumer();
        let ids: Vec<u32> = (0..3).filter_map(|_| consumer.next()).map(|j| j.id).collect();
        assert_eq!(ids, [0, 1, 2]);
    }

    #[test]
    fn a_full_queue_rejects_at_once_and_returns_the_job() {
        let queue = WorkQueue::bounded(2);
        assert!(queue.submit(job(0)).is_ok());
        assert!(queue.submit(job(1)).is_ok());
        let (rejected, error) = queue.submit(job(2)).expect_err("third job must be rejected");
        assert_eq!(rejected.id, 2);
        assert_eq!(error, QueueError::Full { capacity: 2 });
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn abandoned_jobs_are_skipped() {
        let queue = WorkQueue::bounded(4);
        let gone = job(0);
        gone.abandoned.store(true, Ordering::Relaxed);
        assert!(queue.submit(gone).is_ok());
        assert!(queue.submit(job(1)).is_ok());
        assert_eq!(queue.consumer().next().map(|j| j.id), Some(1));
        assert!(queue.is_empty());
    }

    #[test]
    fn consumers_stop_when_producers_are_gone_and_the_queue_is_drained() {
        let queue = WorkQueue::bounded(4);
        assert!(queue.submit(job(7)).is_ok());
        let consumer = queue.consumer();
        drop(queue);
        assert_eq!(consumer.next().map(|j| j.id), Some(7));
        assert!(consumer.next().is_none());
    }

    #[test]
    fn each_job_reaches_exactly_one_of_many_consumers() {
        let queue = WorkQueue::bounded(1000);
        for id in 0..1000 {
            assert!(queue.submit(job(id)).is_ok());
        }
        let consumers: Vec<_> = (0..4).map(|_| queue.consumer()).collect();
        drop(queue);
        let handles: Vec<_> = consumers
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || std::iter::from_fn(|| c.next().map(|j| j.id)).collect::<Vec<_>>())
            })
            .collect();
        let mut seen: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }
}
