//! Sidecars: more commands in an instance's container beside the app, as
//! Diego runs a DesiredLrp's codependent run actions. The container's init
//! (see [`super::INIT_SCRIPT`]) becomes one that starts each sidecar, then
//! the app, and ends the instance when any of them exits: every process
//! gets TERM and the init exits (with the app's status if the app ended),
//! so the executor sees the instance crash. Sidecars share the app's user,
//! directory, environment and memory limit, since they share its process.
//!
//! A sidecar's output is logged with its own source type (CC's
//! `APP/PROC/WEB/SIDECAR/NAME`): its stdout and stderr go to two FIFOs the
//! cell made in a directory the container sees, which the cell reads, so
//! the app's output and its own cannot be mixed up.

use super::INIT_SCRIPT;
use crate::logs::{self, LogTarget};
use crate::runtime::{BindMount, ContainerSpec};
use kiln_model::bbs::SidecarAction;
use kiln_model::logs::MessageType;
use std::path::{Path, PathBuf};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// Where the FIFOs are inside the container.
const FIFO_DIR: &str = "/tmp/.kiln-sidecars";

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The init script for an instance with `sidecars`. A sidecar that exits
/// says so on stderr and signals the init with USR1 until the init is gone
/// (a signal that lands just before the init's `wait` is noticed at the
/// next one); `wait` returns on a trapped signal, so the init notices at
/// once.
fn script(sidecars: &[SidecarAction]) -> String {
    let mut s = String::from(
        "trap 'kill -TERM $pids 2>/dev/null' TERM\n\
         trap 'ended=1' USR1\n\
         init=$$\n\
         ended=\n\
         pids=\n",
    );
    for (i, sidecar) in sidecars.iter().enumerate() {
        let command: Vec<String> = std::iter::once(&sidecar.path)
            .chain(&sidecar.args)
            .map(|word| quote(word))
            .collect();
        let label = quote(&format!("Sidecar {}", sidecar.name));
        let (out, err) = (fifo(i, "out"), fifo(i, "err"));
        s.push_str(&format!(
            "( {} >{out} 2>{err}; status=$?; printf '%s exited with status %s\\n' {label} \"$status\" >&2; \
             while kill -USR1 \"$init\" 2>/dev/null; do sleep 1; done ) &\n\
             pids=\"$pids $!\"\n",
            command.join(" ")
        ));
    }
    s.push_str(
        "\"$@\" &\n\
         child=$!\n\
         pids=\"$pids $child\"\n\
         while :; do\n\
         \x20 if [ -n \"$ended\" ]; then kill -TERM $pids 2>/dev/null; exit 1; fi\n\
         \x20 wait \"$child\"\n\
         \x20 status=$?\n\
         \x20 if ! kill -0 \"$child\" 2>/dev/null; then kill -TERM $pids 2>/dev/null; exit \"$status\"; fi\n\
         done",
    );
    s
}

/// The container's path of sidecar `index`'s FIFO for `stream`.
fn fifo(index: usize, stream: &str) -> String {
    format!("{FIFO_DIR}/{index}.{stream}")
}

/// The cell's ends of the sidecars' FIFOs. The cell holds a writer of each
/// until the container is gone, so a reader sees no end of file while a
/// sidecar is yet to open its FIFO or between two writers.
#[derive(Default)]
pub struct SidecarLogs {
    readers: Vec<(pipe::Receiver, MessageType, LogTarget)>,
    writers: Vec<pipe::Sender>,
}

impl SidecarLogs {
    /// Starts copying every sidecar's lines into the log; returns the
    /// copies and the writers to drop once the container's process ended.
    pub fn pump(self) -> (Vec<JoinHandle<()>>, Vec<pipe::Sender>) {
        let pumps = self
            .readers
            .into_iter()
            .map(|(reader, kind, target)| tokio::spawn(logs::pump(reader, target, kind)))
            .collect();
        (pumps, self.writers)
    }
}

/// Puts `sidecars` into the container's init and makes their FIFOs, whose
/// lines go to `log` with each sidecar's source type. The app must run
/// under the shell init: an image without a shell cannot have sidecars.
pub fn add(
    spec: &mut ContainerSpec,
    sidecars: &[SidecarAction],
    log: &LogTarget,
) -> Result<SidecarLogs, String> {
    if sidecars.is_empty() {
        return Ok(SidecarLogs::default());
    }
    let args = &spec.process.args;
    let wrapped = args.len() > 2 && args[0] == "/bin/sh" && args[2] == INIT_SCRIPT;
    if !wrapped {
        return Err("sidecars need a shell (/bin/sh) in the container image".into());
    }
    let host_dir = fifo_dir(spec);
    let logs = make_fifos(&host_dir, sidecars, log).map_err(|e| {
        format!(
            "making the sidecars' log FIFOs in {}: {e}",
            host_dir.display()
        )
    })?;
    spec.process.args[2] = script(sidecars);
    Ok(logs)
}

/// The host directory the container sees at [`FIFO_DIR`]: inside its
/// `/tmp` when that is the cell's (a stack's container), else one of the
/// container's own directories, mounted there.
fn fifo_dir(spec: &mut ContainerSpec) -> PathBuf {
    let tmp = spec.mounts.iter().find(|m| m.destination == "/tmp");
    if let Some(tmp) = tmp {
        return tmp.source.join(".kiln-sidecars");
    }
    let dir = spec.bundle.join("sidecar-logs");
    spec.mounts.push(BindMount {
        source: dir.clone(),
        destination: FIFO_DIR.into(),
        read_only: false,
    });
    dir
}

fn make_fifos(
    dir: &Path,
    sidecars: &[SidecarAction],
    log: &LogTarget,
) -> std::io::Result<SidecarLogs> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut logs = SidecarLogs::default();
    for (i, sidecar) in sidecars.iter().enumerate() {
        let target = LogTarget {
            source_type: if sidecar.log_source.is_empty() {
                log.source_type.clone()
            } else {
                sidecar.log_source.clone()
            },
            ..log.clone()
        };
        for (stream, kind) in [("out", MessageType::Out), ("err", MessageType::Err)] {
            let path = dir.join(format!("{i}.{stream}"));
            let _ = std::fs::remove_file(&path);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )?;
            // The app's user writes it; umask left out.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
            let reader = pipe::OpenOptions::new().open_receiver(&path)?;
            let writer = pipe::OpenOptions::new().open_sender(&path)?;
            logs.readers.push((reader, kind, target.clone()));
            logs.writers.push(writer);
        }
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_whatever_they_hold() {
        assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
        let s = script(&[SidecarAction {
            name: "proxy".into(),
            path: "/bin/sh".into(),
            args: vec!["-c".into(), "echo 'hi'; exit 3".into()],
            log_source: String::new(),
        }]);
        assert!(
            s.contains(concat!(
                r"( '/bin/sh' '-c' 'echo '\''hi'\''; exit 3' ",
                ">/tmp/.kiln-sidecars/0.out 2>/tmp/.kiln-sidecars/0.err; status=$?;"
            )),
            "{s}"
        );
        assert!(s.contains("'Sidecar proxy'"), "{s}");
    }
}
