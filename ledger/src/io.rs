//! The seam between the ledger and its disk, and the faults a test can inject there.
//!
//! Every write the ledger makes to make something durable goes through [`Io::run`]: the
//! commit's batch, sled's flush, the fsync of its log and blobs, the views' batch, the
//! checkpoint's compare-and-swap and its sync. [`Io::run`] counts them; with a
//! [`FaultPlan`], the Nth one fails instead of running (an I/O error), or the process ends
//! abruptly just before or just after it (SIGKILL, as a power cut or an OOM kill would end
//! it). redb's `FuzzerBackend` is the model; sled has no pluggable backend, so the seam is
//! at our calls into it: sled's own writes below a call are either all done (the call
//! returned) or not known to be (the process ended during it).
//!
//! Production code passes no plan; the seam then costs one relaxed atomic increment per
//! operation. `cledger serve` takes a plan from the environment variable `CLEDGER_FAULT`
//! (`N:ACTION`) so end-to-end tests can fail the real binary; it says so loudly at start.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A durable-path operation, as counted by [`Io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The commit's `apply_batch` (events, indexes, Merkle nodes, keys, head).
    CommitBatch,
    /// `sled::Db::flush` of a commit.
    Flush,
    /// fsync of sled's log (and any new blob files).
    SyncLog,
    /// The views' batch (states and cursor).
    PersistViews,
    /// The latest checkpoint's compare-and-swap.
    StoreCheckpoint,
    /// The flush and fsync that make a checkpoint durable before it is published.
    SyncCheckpoint,
    /// A batch written while opening (catching the Merkle tree or the views up).
    OpenBatch,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::CommitBatch => "commit_batch",
            Op::Flush => "flush",
            Op::SyncLog => "sync_log",
            Op::PersistViews => "persist_views",
            Op::StoreCheckpoint => "store_checkpoint",
            Op::SyncCheckpoint => "sync_checkpoint",
            Op::OpenBatch => "open_batch",
        }
    }
}

/// What happens at the planned operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// The operation is not run; it fails with an I/O error.
    Error,
    /// The process is killed (SIGKILL) before the operation runs.
    CrashBefore,
    /// The process is killed right after the operation returned.
    CrashAfter,
    /// The operation's thread panics before it runs (a bug, as the writer must survive
    /// reporting it).
    Panic,
}

impl std::str::FromStr for FaultAction {
    type Err = String;
    fn from_str(text: &str) -> Result<FaultAction, String> {
        match text {
            "error" => Ok(FaultAction::Error),
            "crash-before" => Ok(FaultAction::CrashBefore),
            "crash-after" => Ok(FaultAction::CrashAfter),
            "panic" => Ok(FaultAction::Panic),
            other => Err(format!("unknown fault action `{other}` (error, crash-before, crash-after, panic)")),
        }
    }
}

/// Fail the `nth` (1-based) durable-path operation, counted from the ledger's open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub nth: u64,
    pub action: FaultAction,
}

impl std::str::FromStr for FaultPlan {
    type Err = String;
    /// `N:ACTION`, e.g. `12:crash-after`.
    fn from_str(text: &str) -> Result<FaultPlan, String> {
        let (nth, action) = text.split_once(':').ok_or("expected N:ACTION")?;
        let nth = nth.parse().map_err(|_| format!("`{nth}` is not a count"))?;
        Ok(FaultPlan { nth, action: action.parse()? })
    }
}

/// The message of an injected error, so tests can tell it from a real one.
pub const INJECTED: &str = "injected fault";

#[derive(Default)]
pub struct Io {
    count: AtomicU64,
    plan: Option<FaultPlan>,
    /// Every operation in order, when recording (tests sweep over them).
    trace: Option<Mutex<Vec<Op>>>,
}

impl Io {
    pub fn new(plan: Option<FaultPlan>, record: bool) -> Io {
        Io { count: AtomicU64::new(0), plan, trace: record.then(|| Mutex::new(Vec::new())) }
    }

    /// Runs `f` as operation `op`, or fails it as planned. Errors of `f` pass through.
    pub fn run<T, E: From<io::Error>>(&self, op: Op, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(trace) = &self.trace {
            trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(op);
        }
        let planned = self.plan.filter(|p| p.nth == n).map(|p| p.action);
        match planned {
            Some(FaultAction::Error) => {
                return Err(io::Error::other(format!("{INJECTED}: operation {n} ({})", op.as_str())).into());
            }
            Some(FaultAction::CrashBefore) => kill_self(),
            Some(FaultAction::Panic) => panic!("{INJECTED}: operation {n} ({})", op.as_str()),
            _ => {}
        }
        let result = f();
        if planned == Some(FaultAction::CrashAfter) {
            kill_self();
        }
        result
    }

    /// Operations run so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The operations run so far, in order (empty unless recording).
    pub fn trace(&self) -> Vec<Op> {
        self.trace.as_ref().map(|t| t.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()).unwrap_or_default()
    }
}

/// Ends the process as SIGKILL does: no destructor, no flush, no exit handler.
fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this is not reached.
    std::process::abort()
}
