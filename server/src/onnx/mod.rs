//! The ONNX Runtime backend: finding the library, opening sessions, running requests.

mod batch;
mod ragged;
mod runtime;
mod session;
mod staging;
mod strings;
mod zipmap;

pub use batch::{BatchRunner, OutputTensor};
pub use runtime::{LibrarySource, MISSING_LIBRARY_HELP, find_library, start};
pub use session::{OpenedSession, cuda_available, intra_threads, open_session, shares_threads, signature};
pub use zipmap::ClassColumns;
