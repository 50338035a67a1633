//! Ending the `ferry` process at once, for a stop that comes while models load (part of the binary, not the
//! library).

/// Ends the process with `status` now: no atexit handlers, no C++ static destructors, no Rust destructors.
/// `std::process::exit` would run ONNX Runtime's static destructors while other threads are still inside
/// ONNX Runtime creating sessions, which can crash the exit. Write and flush anything that must be seen
/// before calling it (the log goes to stdout line by line).
pub fn exit_now(status: i32) -> ! {
    // SAFETY: `_exit` takes no pointer and touches no Rust state; it ends every thread of the process at once,
    // so nothing can observe a half-finished operation afterwards.
    unsafe { libc::_exit(status) }
}
