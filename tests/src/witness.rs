//! Real `cledger witness` processes for tests, and a raw tlog-witness client to speak the
//! protocol to them byte by byte.

use crate::cledger_path;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a witness may take to print its address (a bound against hangs).
const START_LIMIT: Duration = Duration::from_secs(60);

/// A `cledger witness` process. Dropping it sends SIGTERM (SIGKILL after a while).
pub struct WitnessProcess {
    child: Option<Child>,
    pub url: String,
    /// The verifier key it printed (`name+keyid+base64(0x04 || key)`).
    pub vkey: String,
    /// Everything it printed on stdout at its last start.
    pub stdout: String,
    pub key: PathBuf,
    pub logs: Vec<String>,
    pub name: Option<String>,
    /// The port of its last start: a restart listens there again.
    port: u16,
    stderr: PathBuf,
}

impl WitnessProcess {
    /// A witness with its key (created on first start) at `key`, witnessing `logs`.
    pub fn start(key: &Path, logs: &[String], name: Option<&str>) -> WitnessProcess {
        let mut w = WitnessProcess {
            child: None,
            url: String::new(),
            vkey: String::new(),
            stdout: String::new(),
            key: key.to_path_buf(),
            logs: logs.to_vec(),
            name: name.map(str::to_string),
            port: 0,
            stderr: key.with_extension("stderr"),
        };
        w.launch();
        w
    }

    fn launch(&mut self) {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr).expect("stderr log");
        let mut command = Command::new(cledger_path());
        command.args(["witness", "--listen", &format!("127.0.0.1:{}", self.port), "--key"]).arg(&self.key);
        for log in &self.logs {
            command.args(["--log", log]);
        }
        if let Some(name) = &self.name {
            command.args(["--name", name]);
        }
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn cledger witness");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_LIMIT;
        let mut stdout = String::new();
        let mut url = None;
        while url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(address) = line.strip_prefix("listening on ") {
                        url = Some(address.trim().to_string());
                    }
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("cledger witness did not start:\n{stdout}\n{}", std::fs::read_to_string(&self.stderr).unwrap_or_default());
                }
            }
        }
        self.vkey = stdout.lines().find_map(|l| l.strip_prefix("witness verifier key: ")).expect("the witness prints its key").to_string();
        self.url = url.expect("address");
        self.port = self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        self.stdout = stdout;
        self.child = Some(child);
    }

    /// `URL=VKEY`, as `serve --witness` takes it.
    pub fn serve_arg(&self) -> String {
        format!("{}={}", self.url, self.vkey)
    }

    /// What it logged on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL: dies at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::terminate_child(child);
        }
    }

    /// Starts it again on the same key, state and port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.launch();
    }

    /// POST `body` to its add-checkpoint: (status, content type, body).
    pub fn add_checkpoint(&self, body: &str) -> (u16, String, String) {
        add_checkpoint(&self.url, body)
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// POST a raw add-checkpoint body: (status, content type, body).
pub fn add_checkpoint(url: &str, body: &str) -> (u16, String, String) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let reply = client.post(format!("{url}/add-checkpoint")).body(body.to_string()).send().expect("POST add-checkpoint");
    let status = reply.status().as_u16();
    let content_type = reply.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, content_type, reply.text().expect("body"))
}

/// Three witnesses of `logs`, keys in `dir`.
pub fn three(dir: &Path, logs: &[String]) -> Vec<WitnessProcess> {
    (1..=3).map(|i| WitnessProcess::start(&dir.join(format!("witness-{i}.key")), logs, Some(&format!("witness.test/w{i}")))).collect()
}
