//! Failpoints at the durable steps of a group (log append, the log's fsync, apply, snapshot build
//! and install) and of the history engine (transfer tasks), for tests that inject an error or a
//! crash there and check what survives. Built on the `fail` crate and compiled in only with the
//! `failpoints` feature, which only dev-dependencies turn on: without it [`check`] is an inline
//! `Ok(())` and no failpoint exists in the binary (release builds never have it).
//!
//! A failpoint is configured with `fail::cfg(name, "return(ACTION@SCOPE)")` (or `FAILPOINTS`):
//! `ACTION` is `error` (the default: the step fails as a disk error would), `panic` (the step
//! panics, as a crash of that task would) or `abort` (the whole process dies there, 100 ms later, as
//! in a crash or `kill -9`: for tests that run the node in a child process), and `SCOPE`, when given, limits it to one data
//! directory, so one node of an in-process cluster fails while the others go on. The `fail`
//! crate's own actions (`sleep(ms)`, `pause`, counts like `1*return`) work as documented there.

/// The failpoint names, one per step.
pub mod names {
    /// Before a group's log entries are handed to the log writer.
    pub const RAFT_LOG_APPEND: &str = "raft_log_append";
    /// In the log writer, before the batch of every group's appends is written and fsynced.
    pub const RAFT_LOG_FSYNC: &str = "raft_log_fsync";
    /// In the state machine, after the entries were applied to the write batch and before it
    /// is committed.
    pub const APPLY: &str = "state_machine_apply";
    /// Building a snapshot, before the shard is dumped.
    pub const SNAPSHOT_BUILD: &str = "snapshot_build";
    /// Installing a received snapshot, before anything of it is written.
    pub const SNAPSHOT_INSTALL: &str = "snapshot_install";
    /// Installing a received snapshot, once it is this node's snapshot file and before the
    /// shard's state is replaced by it.
    pub const SNAPSHOT_INSTALL_STATE: &str = "snapshot_install_state";
    /// The history leader's outbox processor, before it executes a transfer task.
    pub const TRANSFER_EXECUTE: &str = "transfer_execute";
    /// The history leader's outbox processor, before it hands a workflow or activity task to
    /// matching.
    pub const OUTBOX_DISPATCH: &str = "outbox_dispatch";
}

/// Evaluates failpoint `name` for the node whose data directory is `scope`: `Err` when it is
/// set to fail here, a panic when set to panic.
#[cfg(feature = "failpoints")]
pub fn check(name: &str, scope: &std::path::Path) -> Result<(), String> {
    let Some(arg) = fail::eval(name, |arg| arg.unwrap_or_default()) else {
        return Ok(());
    };
    let (action, target) = arg.split_once('@').unwrap_or((arg.as_str(), ""));
    if !target.is_empty() && std::path::Path::new(target) != scope {
        return Ok(());
    }
    match action {
        "panic" => panic!("failpoint {name}: injected panic"),
        "abort" => {
            // The rest of the process goes on for a moment first, as the node's other tasks do
            // while one of them is at this step when the node is killed (openraft purging the
            // log while the state machine installs a snapshot, say).
            std::thread::sleep(std::time::Duration::from_millis(100));
            eprintln!("failpoint {name}: injected abort");
            std::process::abort()
        }
        _ => Err(format!("failpoint {name}: injected error")),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str, _scope: &std::path::Path) -> Result<(), String> {
    Ok(())
}
