//! Crash-recovery test hooks, read from `LETHE_FAULT_INJECT` (never set in operation):
//! `exit-after:POINT` ends the process at POINT; `stall-at:POINT` stops the work there, for
//! a test to kill the process with `kill -9`. Either says so on stderr first. Points:
//! `SYSTEM.COLLECTION` (an erasure, after that collection's writes), `access` (a package
//! built, not yet stored), `mail` (a message claimed, not yet sent) and `retention` (a
//! batch committed and recorded).

/// Passes `point`, unless a test asked to stop the process there.
pub fn point(point: &str) {
    let Ok(v) = std::env::var("LETHE_FAULT_INJECT") else {
        return;
    };
    if v.strip_prefix("exit-after:") == Some(point) {
        eprintln!("fault injected after {point}");
        std::process::exit(86);
    }
    if v.strip_prefix("stall-at:") == Some(point) {
        eprintln!("fault injected: stalled at {point}");
        let stall = || loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        };
        // Only this task stalls: the rest of a multi-threaded runtime (heartbeats, HTTP)
        // goes on, as in a process that hangs in one request.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(stall),
            _ => stall(),
        }
    }
}
