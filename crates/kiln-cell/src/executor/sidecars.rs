//! Sidecars: more commands in an instance's container beside the app, as
//! Diego runs a DesiredLrp's codependent run actions. The container's init
//! (see [`super::INIT_SCRIPT`]) becomes one that starts each sidecar, then
//! the app, and ends the instance when any of them exits: every process
//! gets TERM and the init exits (with the app's status if the app ended),
//! so the executor sees the instance crash. Sidecars share the app's user,
//! directory, environment and memory limit, since they share its process.

use super::INIT_SCRIPT;
use crate::runtime::ContainerSpec;
use kiln_model::bbs::SidecarAction;

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
    for sidecar in sidecars {
        let command: Vec<String> = std::iter::once(&sidecar.path)
            .chain(&sidecar.args)
            .map(|word| quote(word))
            .collect();
        let label = quote(&format!("Sidecar {}", sidecar.name));
        s.push_str(&format!(
            "( {}; status=$?; printf '%s exited with status %s\\n' {label} \"$status\" >&2; \
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

/// Puts `sidecars` into the container's init. The app must run under the
/// shell init: an image without a shell cannot have sidecars.
pub fn add(spec: &mut ContainerSpec, sidecars: &[SidecarAction]) -> Result<(), String> {
    if sidecars.is_empty() {
        return Ok(());
    }
    let args = &mut spec.process.args;
    let wrapped = args.len() > 2 && args[0] == "/bin/sh" && args[2] == INIT_SCRIPT;
    if !wrapped {
        return Err("sidecars need a shell (/bin/sh) in the container image".into());
    }
    args[2] = script(sidecars);
    Ok(())
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
        }]);
        assert!(
            s.contains(r"( '/bin/sh' '-c' 'echo '\''hi'\''; exit 3'; status=$?;"),
            "{s}"
        );
        assert!(s.contains("'Sidecar proxy'"), "{s}");
    }
}
