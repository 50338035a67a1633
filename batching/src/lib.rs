//! Ferry's dynamic batcher, free of gRPC and ONNX Runtime.
//!
//! Requests of one model version queue by priority level in a [`BatcherState`], which decides, given the
//! time, which of them an idle model instance runs next as one batch, following Triton's `dynamic_batching`
//! rules ([`BatchingPolicy`]), or, where the config asks for it, a delay that adapts to the arrivals it
//! sees. A [`Scheduler`] shares that state between the request handlers that submit and the instance threads
//! that block waiting for batches. Each request carries a [`Ticket`] that its caller can withdraw: a request
//! whose client went away or whose deadline passed is never run. A stateful model's requests go through a
//! [`SequenceBook`] instead (Triton's `sequence_batching`).

#![forbid(unsafe_code)]

mod arrivals;
mod policy;
mod scheduler;
mod sequence;
mod state;
mod ticket;

pub use policy::{BatchingPolicy, QueuePolicy, TimeoutAction};
pub use scheduler::Scheduler;
pub use sequence::{
    CorrelationId, SequenceBook, SequenceError, SequenceNext, SequencePolicy, SequenceRequest, SequenceRow,
    SequenceStrategy,
};
pub use state::{Admitted, Batch, BatchItem, BatcherState, EnqueueError, Next, Payload, Rejected, Request};
pub use ticket::{Ticket, TicketState};
