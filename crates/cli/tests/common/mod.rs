//! Shared helpers for the CLI tests: running the `strata` binary, tiny configs, run folders.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single `strata` invocation may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A `strata` command running in `cwd`, with plain (uncoloured, info-level) logs on stderr.
pub fn strata(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.current_dir(cwd)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What a finished `strata` process left behind.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub what: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Output {
    /// Asserts a zero exit status and returns `self`.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.status.success(),
            "{} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts exit status 1 with an `error:` line on stderr containing every one of `needles`.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Self {
        assert_eq!(
            self.status.code(),
            Some(1),
            "{} should fail with status 1, got {}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        let error = self
            .stderr
            .split_once("error: ")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| {
                panic!(
                    "{}: stderr has no `error: ` line:\n{}",
                    self.what, self.stderr
                )
            });
        for needle in needles {
            assert!(
                error.contains(needle),
                "{}: the error should mention {needle:?}; stderr:\n{}",
                self.what,
                self.stderr
            );
        }
        self
    }
}

/// Runs `cmd` to completion (at most [`TIMEOUT`]) and checks that it did not panic.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    let what = describe(cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    wait(child, &what, TIMEOUT)
}

/// Runs `strata args...` in `cwd`.
#[track_caller]
pub fn strata_run<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Output {
    run(strata(cwd).args(args))
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("`strata {}`", args.join(" "))
}

/// Reads a child's pipe to the end on a thread (so neither pipe can fill up and block it).
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits (at most `timeout`) for a child spawned by [`strata`]; kills it and fails on timeout.
/// Fails if its stderr reports a panic.
#[track_caller]
pub fn wait(mut child: Child, what: &str, timeout: Duration) -> Output {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().unwrap_or_default();
                panic!("{what} did not exit within {timeout:?}; stderr:\n{stderr}");
            }
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    };
    let output = Output {
        what: what.to_owned(),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        !output.stderr.contains("panicked"),
        "{what} panicked:\n{}",
        output.stderr
    );
    output
}

/// The start of the embedded Tiny Shakespeare, written to `dir/corpus.txt`.
pub fn corpus(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/tinyshakespeare.txt");
    let text = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text.chars().take(20_000).collect::<String>()).unwrap();
    path
}

/// Layers of the tiny model written by [`tiny_config`].
pub const N_LAYER: usize = 1;
/// Width of the tiny model.
pub const D_MODEL: usize = 32;
/// Context length of the tiny model.
pub const BLOCK_SIZE: usize = 16;

/// Writes `dir/tiny.toml`: a one-block, width-32, char-level model over `corpus`, trained
/// for `max_iters` steps on one CPU thread, evaluated and checkpointed every 10 steps.
pub fn tiny_config(dir: &Path, corpus: &Path, max_iters: u64) -> PathBuf {
    let text = format!(
        r#"name = "tiny"

[model]
n_layer = {N_LAYER}
n_head = 2
d_model = {D_MODEL}
block_size = {BLOCK_SIZE}
mlp = "gelu"
norm = "layernorm"
positions = "learned"
bias = false
tied_embeddings = true
dropout = 0.0

[data]
path = '{}'
tokenizer = "char"

[train]
batch_size = 4
max_iters = {max_iters}
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 2
eval_interval = 10
eval_iters = 2
log_interval = 1
seed = 1337
device = "cpu"
threads = 1
"#,
        corpus.display()
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A temporary folder holding `corpus.txt` and a [`tiny_config`] of `max_iters` steps.
pub struct Fixture {
    /// The temporary folder (removed on drop).
    pub dir: tempfile::TempDir,
    /// The corpus file.
    pub corpus: PathBuf,
    /// The config file.
    pub config: PathBuf,
}

impl Fixture {
    /// A fresh fixture.
    pub fn new(max_iters: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let corpus = corpus(dir.path());
        let config = tiny_config(dir.path(), &corpus, max_iters);
        Self {
            dir,
            corpus,
            config,
        }
    }

    /// The temporary folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `strata train --config <config> --out <out> --quiet` followed by `extra`, run in the
    /// fixture folder.
    pub fn train_cmd(&self, out: &Path, extra: &[&str]) -> Command {
        let mut cmd = strata(self.path());
        cmd.arg("train")
            .arg("--config")
            .arg(&self.config)
            .arg("--out")
            .arg(out)
            .arg("--quiet")
            .args(extra);
        cmd
    }

    /// Runs [`Fixture::train_cmd`] to completion.
    #[track_caller]
    pub fn train(&self, out: &Path, extra: &[&str]) -> Output {
        run(&mut self.train_cmd(out, extra))
    }
}

/// The lines of `<run>/metrics.jsonl` as JSON objects.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// The `(step, record)` pairs of `kind` (`"train"` or `"eval"`) in a metrics log, in order.
pub fn records<'a>(
    metrics: &'a [serde_json::Value],
    kind: &str,
) -> Vec<(u64, &'a serde_json::Value)> {
    metrics
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| {
            (
                r["step"].as_u64().expect("metrics record without a step"),
                r,
            )
        })
        .collect()
}

/// `<run>/summary.json`.
pub fn summary(run: &Path) -> serde_json::Value {
    let path = run.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The folder name of the checkpoint at `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Every file under `dir` (relative path → contents), to check that a folder was left alone.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Hidden entries (temporary checkpoint folders, probes, half-written files) anywhere under
/// `dir`; a finished or cleanly stopped run should have none.
pub fn hidden_entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || name.contains(".tmp") || name.contains(".old-") {
                found.push(path.clone());
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}
