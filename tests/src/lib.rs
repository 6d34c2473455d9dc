//! Helpers for end-to-end tests: find (and build) the real `cledger` binary, run it, and
//! make scratch data.

pub mod audit;
pub mod browser;
pub mod nats;
pub mod server;
pub mod soak;
pub mod tls;
pub mod witness;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// Path of the `cledger` binary of the same profile as this test, built on first use so a
/// test never runs a stale binary. `CLEDGER_BIN=PATH` runs another build instead (to show
/// that a new test fails against the code before a fix).
pub fn cledger_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CLEDGER_BIN") {
            return PathBuf::from(bin);
        }
        // Test executables live in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(workspace()).args(["build", "--quiet", "-p", "api", "--bin", "cledger"]);
        // Cargo sets these for the test process; inherited by this build they would differ
        // from a build started from a shell, and build scripts that track them (ring's tracks
        // CARGO_MANIFEST_DIR) would make every `cargo test` and every build here rebuild
        // each other's dependencies.
        for (name, _) in std::env::vars_os() {
            let Some(n) = name.to_str() else { continue };
            let set_by_cargo_for_tests = matches!(n, "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_MANIFEST_LINKS" | "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "CARGO_RUSTC_CURRENT_DIR")
                || n.starts_with("CARGO_PKG_")
                || n.starts_with("CARGO_BIN_");
            if set_by_cargo_for_tests {
                build.env_remove(&name);
            }
        }
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of cledger failed");
        let path = profile_dir.join("cledger");
        assert!(path.exists(), "{} was not built", path.display());
        path
    })
}

/// Stops a child process of a test: SIGTERM, then waits up to 20 s (SIGKILL after that).
pub fn terminate_child(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn cledger() -> Command {
    Command::new(cledger_path())
}

/// Runs `cledger` with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cledger().args(args).output().expect("run cledger");
    (status.code().unwrap_or(-1), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

pub fn sample_file() -> PathBuf {
    workspace().join("examples/colossus.ndjson")
}

/// Changes byte `at` of the stored record (hash ++ canonical bytes) of `seq` directly in
/// sled (the ledger closed).
pub fn tamper_record(data: &Path, seq: u64, at: usize, xor: u8) {
    let db = sled::open(data).expect("open sled");
    let tree = db.open_tree("ledger").expect("ledger tree");
    let (key, offset) = ledger::store::locate(&tree, seq, at).expect("the event is stored");
    let mut block = tree.get(&key).expect("read").expect("block present").to_vec();
    block[offset] ^= xor;
    tree.insert(key, block).expect("write");
    db.flush().expect("flush");
}
