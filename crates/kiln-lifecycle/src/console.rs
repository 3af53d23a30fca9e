//! The builder's own stdout and stderr, and running buildpack scripts with
//! their output passed through to them line by line as it is produced (the
//! cell turns each line of the staging container into a live `STG` log).
//!
//! Output goes through [`Console`] rather than straight to the process's
//! file descriptors so that tests can capture exactly what the cell would
//! see, on the same code path as production.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

/// After a script exits, how long its output pipes may stay open (held by a
/// process it left running in the background) before the builder stops
/// waiting for them and moves on.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Attempts at starting a script that the kernel reports as busy.
const SPAWN_ATTEMPTS: u32 = 50;

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Where the builder's output goes: two line-oriented sinks.
#[derive(Clone)]
pub struct Console {
    out: Sink,
    err: Sink,
}

impl Console {
    /// The process's own stdout and stderr.
    pub fn stdio() -> Self {
        Self::new(io::stdout(), io::stderr())
    }

    /// Any pair of writers (tests capture into buffers).
    pub fn new(out: impl Write + Send + 'static, err: impl Write + Send + 'static) -> Self {
        Console {
            out: Arc::new(Mutex::new(Box::new(out))),
            err: Arc::new(Mutex::new(Box::new(err))),
        }
    }

    /// Print one line on stdout.
    pub fn say(&self, line: &str) {
        write_line(&self.out, line.as_bytes());
    }

    /// Print one line on stderr.
    pub fn warn(&self, line: &str) {
        write_line(&self.err, line.as_bytes());
    }
}

fn write_line(sink: &Sink, line: &[u8]) {
    // A poisoned lock only means another writer panicked mid-line; the sink
    // itself is still usable.
    let mut sink = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Output is best effort: a closed stdout must not fail the staging.
    let _ = sink.write_all(line);
    if !line.ends_with(b"\n") {
        let _ = sink.write_all(b"\n");
    }
    let _ = sink.flush();
}

/// What to do with a script's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Pass it through to the console line by line.
    Stream,
    /// Keep it (detect and release answer on stdout); stderr still streams.
    Capture,
}

/// A buildpack script that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("starting {}: {source}", path.display())]
    Spawn { path: PathBuf, source: io::Error },
    #[error("waiting for {}: {source}", path.display())]
    Wait { path: PathBuf, source: io::Error },
    #[error("{} failed with {status}", path.display())]
    Failed { path: PathBuf, status: ExitStatus },
}

/// Run `command` to completion, streaming its stderr (and its stdout unless
/// captured) to `console`. Returns the captured stdout (empty when
/// streamed).
pub fn run_script(
    console: &Console,
    mut command: Command,
    stdout: Stdout,
) -> Result<Vec<u8>, ScriptError> {
    let path = PathBuf::from(command.get_program());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut command, &path)?;

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let child_stdout = child.stdout.take().expect("stdout is piped");
    let child_stderr = child.stderr.take().expect("stderr is piped");

    let err_sink = console.err.clone();
    let err_done = done_tx.clone();
    thread::spawn(move || {
        forward_lines(child_stderr, &err_sink);
        drop(err_done);
    });
    let captured = Arc::new(Mutex::new(Vec::new()));
    match stdout {
        Stdout::Stream => {
            let out_sink = console.out.clone();
            thread::spawn(move || {
                forward_lines(child_stdout, &out_sink);
                drop(done_tx);
            });
        }
        Stdout::Capture => {
            let captured = captured.clone();
            thread::spawn(move || {
                let mut buffer = Vec::new();
                let _ = BufReader::new(child_stdout).read_to_end(&mut buffer);
                *captured.lock().unwrap_or_else(|p| p.into_inner()) = buffer;
                drop(done_tx);
            });
        }
    }

    let status = child.wait().map_err(|source| ScriptError::Wait {
        path: path.clone(),
        source,
    })?;
    // Both forwarders hold a sender; the channel disconnects when both have
    // seen end of file. A background process the script left behind may
    // hold the pipes open forever, so only wait a little for that.
    let deadline = std::time::Instant::now() + PIPE_DRAIN_GRACE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                console.warn(&format!(
                    "warning: {} exited but a process it started still holds its output open",
                    path.display()
                ));
                break;
            }
        }
    }

    if !status.success() {
        return Err(ScriptError::Failed { path, status });
    }
    let captured = std::mem::take(&mut *captured.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(captured)
}

fn forward_lines(pipe: impl Read, sink: &Sink) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => write_line(sink, &line),
        }
    }
}

/// Start `command`, retrying while the kernel says the script is busy
/// (`ETXTBSY`): in a multi-threaded process a script that was just written
/// can still have a write descriptor open in a child forked meanwhile by
/// another thread, until that child execs.
fn spawn(command: &mut Command, path: &Path) -> Result<Child, ScriptError> {
    const ETXTBSY: i32 = 26;
    let mut attempt = 1;
    loop {
        match command.spawn() {
            Ok(child) => return Ok(child),
            Err(error) if error.raw_os_error() == Some(ETXTBSY) && attempt < SPAWN_ATTEMPTS => {
                attempt += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(ScriptError::Spawn {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}
