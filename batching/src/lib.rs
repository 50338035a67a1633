//! Request scheduling for Ferry, free of gRPC and ONNX Runtime.
//!
//! A model version owns one [`WorkQueue`]; the front end submits jobs to it and every model instance, each on
//! its own OS thread, takes the next job when it becomes free. The queue is bounded so that overload is
//! answered at once ([`QueueError::Full`]) instead of growing without limit, and jobs whose client has gone
//! away are dropped before they cost any compute.

#![forbid(unsafe_code)]

mod queue;

pub use queue::{Consumer, Job, QueueError, WorkQueue};
