//! Headless Chromium (Debian's package), driven over the Chrome DevTools Protocol on a pipe
//! (`--remote-debugging-pipe`: commands on fd 3, replies on fd 4, each message JSON ended by
//! a NUL byte). No WebDriver server, no WebSocket client and no crate: a few dozen lines of
//! protocol, and nothing whose version must match the browser's.
//!
//! `scripts/test.sh` installs Chromium when missing and sets `CLEDGER_TEST_BROWSER=required`;
//! then a missing browser fails the test instead of skipping it.

use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A bound against hangs for one protocol reply, not a performance assertion.
const REPLY_LIMIT: Duration = Duration::from_secs(60);

/// The Chromium executable: `CLEDGER_CHROMIUM`, or `chromium` on PATH. Panics when the browser
/// is required (`CLEDGER_TEST_BROWSER=required`) and missing; otherwise `None` (skip).
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CLEDGER_CHROMIUM").map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n))).find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CLEDGER_TEST_BROWSER").as_deref() == Ok("required") {
            panic!("Chromium is required (CLEDGER_TEST_BROWSER=required) but not found: run scripts/test.sh, which installs it");
        }
        eprintln!("skipping: chromium not on PATH (scripts/test.sh installs it)");
    }
    found
}

/// Where screenshots are kept: `target/dashboard-screenshots/`.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::workspace().join("target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// One browser with one page.
pub struct Browser {
    child: Child,
    commands: File,
    replies: BufReader<File>,
    next_id: u64,
    session: String,
    /// Console errors, uncaught exceptions and CSP violations seen so far.
    pub problems: Vec<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// A close-on-exec copy of `fd` numbered 10 or above, so that placing it on 3 or 4 in the
/// child never clobbers the other one.
fn high(fd: i32) -> i32 {
    // SAFETY: fcntl on a descriptor we own.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    assert!(copy >= 10, "fcntl F_DUPFD_CLOEXEC: {}", std::io::Error::last_os_error());
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    copy
}

impl Browser {
    /// Starts headless Chromium on a fresh profile and opens a page of `width`×`height`.
    pub fn launch(chromium: &Path, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("profile directory");
        let (chrome_reads, we_write) = pipe();
        let (we_read, chrome_writes) = pipe();
        let (chrome_reads, chrome_writes) = (high(chrome_reads), high(chrome_writes));
        let log = File::create(profile.path().join("chromium.log")).expect("log file");
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(chrome_reads, 3) < 0 || libc::dup2(chrome_writes, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn chromium");
        // SAFETY: the child has its copies; these are ours to close or own.
        let (commands, replies) = unsafe {
            libc::close(chrome_reads);
            libc::close(chrome_writes);
            (File::from_raw_fd(we_write), File::from_raw_fd(we_read))
        };
        let mut browser =
            Browser { child, commands, replies: BufReader::new(replies), next_id: 0, session: String::new(), problems: vec![], _profile: profile };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call_browser("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        for method in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(method, json!({}));
        }
        browser.call("Emulation.setDeviceMetricsOverride", json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}));
        browser
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).expect("JSON");
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + REPLY_LIMIT;
        loop {
            assert!(Instant::now() < deadline, "no reply from chromium to {method}");
            let mut raw = vec![];
            let n = self.replies.read_until(0, &mut raw).expect("read from chromium");
            assert!(n > 0, "chromium closed the pipe (waiting for {method})");
            raw.pop();
            let reply: Value = serde_json::from_slice(&raw).expect("a JSON message from chromium");
            if reply["id"].as_u64() == Some(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
            self.note_event(&reply);
        }
    }

    /// Keeps what a test must see: exceptions, console errors, CSP refusals.
    fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.problems.push(format!("exception: {}", params["exceptionDetails"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.problems.push(format!("log: {} {}", params["entry"]["text"], params["entry"]["url"]));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self.problems.push(format!("console: {}", params["args"])),
            _ => {}
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("the page to load", "document.readyState === 'complete'");
    }

    /// The value of a JavaScript expression (awaited if it is a promise).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}));
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy (bounded: 30 s), and returns its value.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        // While a page (re)loads its elements may be missing: that is "not yet".
        let guarded = format!("(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded);
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "gave up waiting for {what} ({expression}); problems: {:?}", self.problems);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the element with `data-field="field"` (panics if absent).
    pub fn field(&mut self, field: &str) -> String {
        let v = self.eval(&format!("(() => {{ const e = document.querySelector('[data-field={}]'); return e ? e.textContent : null; }})()", json!(field)));
        v.as_str().unwrap_or_else(|| panic!("no element with data-field={field}")).to_string()
    }

    /// A PNG of the whole page, saved as `dir/name.png`.
    pub fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (w, h) = (size["width"].as_f64().unwrap_or(1400.0), size["height"].as_f64().unwrap_or(1100.0).min(6000.0));
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true, "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        );
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("screenshot data")).expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.commands.write_all(b"{\"id\":999999,\"method\":\"Browser.close\"}\0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
