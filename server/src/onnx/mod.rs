//! The ONNX Runtime backend: finding the library, opening sessions, running requests.

mod runtime;
mod session;
mod strings;

pub use runtime::{LibrarySource, MISSING_LIBRARY_HELP, find_library, start};
pub use session::{OutputTensor, open_session, run, signature};
