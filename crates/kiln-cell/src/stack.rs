//! The host-derived stack: the root filesystem every container runs on.
//!
//! Cloud Foundry's `cflinuxfs4` is a full Ubuntu root filesystem. Kiln's
//! fast default reuses the host's userland instead: the stack directory
//! holds only empty mountpoints, the merged-usr symlinks (`bin`, `lib`,
//! `lib64`, `sbin` → `usr/...`) and a *generated* `/etc`; the host's `/usr`
//! is bind-mounted read-only at container creation. The host's `/etc` is
//! never exposed: only the files listed in [`ETC_ALLOWED`] are written, and
//! anything else found in the stack's `etc` (say, a `shadow` left by an
//! older build) is removed. Building is idempotent and takes milliseconds,
//! so the cell rebuilds the stack at every start.

use kiln_model::{CONTAINER_GID, CONTAINER_UID, CONTAINER_USER};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// A built stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    /// The root filesystem directory, mounted read-only as `/`.
    pub rootfs: PathBuf,
    /// The host directory bind-mounted read-only at `/usr`.
    pub usr: PathBuf,
    /// Mounted read-only over `/usr/lib/locale`: the host's locales plus
    /// the one `LANG` names ([`LOCALE`]); `None` when it could not be built
    /// (then the host's directory shows and programs fall back to C).
    pub locales: Option<PathBuf>,
}

impl Stack {
    /// The provider a Task or DesiredLrp names to run on this stack.
    pub fn rootfs_provider(&self) -> kiln_model::rootfs::RootFsProvider {
        kiln_model::rootfs::RootFsProvider::preloaded(&self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("building stack at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid stack name {0:?}")]
    InvalidName(String),
    #[error("host has no /usr/bin: it cannot lend its userland to a stack")]
    NoHostUsr,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StackError + '_ {
    move |source| StackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files and directories a generated `/etc` may contain.
pub const ETC_ALLOWED: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "os-release",
    "ld.so.cache",
    "ssl",
    "alternatives",
    "localtime",
    "mtab",
    "apt",
    "mime.types",
    "timezone",
];

/// Host files that buildpacks and apps commonly read on cflinuxfs4, copied
/// as they are (none holds a secret): package sources and their keys, the
/// MIME table, the time zone's name, OpenSSL's configuration.
const HOST_ETC_FILES: &[&str] = &["mime.types", "timezone", "ssl/openssl.cnf"];

/// Host directories under `/etc/apt` copied whole (apt's `auth.conf.d`,
/// which holds credentials, is not among them).
const HOST_APT_DIRS: &[&str] = &["sources.list.d", "trusted.gpg.d"];

/// Empty directories the runtime mounts onto, or that programs expect.
const MOUNTPOINTS: &[&str] = &[
    "usr",
    "proc",
    "dev",
    "sys",
    "tmp",
    "home",
    "home/vcap",
    "root",
    "run",
    "var",
    "var/log",
    "mnt",
    "opt",
    "srv",
];

/// The name of the stack derived from this host, from `/etc/os-release`'s
/// `ID` and `VERSION_ID`, e.g. `debian12-host`.
pub fn host_stack_name() -> String {
    let text = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    stack_name_from_os_release(&text)
}

fn stack_name_from_os_release(text: &str) -> String {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| {
                v.trim()
                    .trim_matches('"')
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    };
    let id = field("ID");
    if id.is_empty() {
        return "linux-host".into();
    }
    format!("{id}{}-host", field("VERSION_ID"))
}

/// Builds (or brings up to date) the stack rootfs at `dir`. Idempotent:
/// unchanged files are not rewritten.
pub fn build_host_stack(dir: &Path, name: &str) -> Result<Stack, StackError> {
    build_stack_from(dir, name, Path::new("/"))
}

/// [`build_host_stack`] taking the host's files from `host_root` (tests).
fn build_stack_from(dir: &Path, name: &str, host_root: &Path) -> Result<Stack, StackError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(StackError::InvalidName(name.into()));
    }
    let usr = host_root.join("usr");
    if !usr.join("bin").is_dir() {
        return Err(StackError::NoHostUsr);
    }
    create_dir(dir, 0o755)?;
    for d in MOUNTPOINTS {
        create_dir(&dir.join(d), 0o755)?;
    }
    // The home of vcap is a mountpoint; the stack's copy is never written.
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(io_err(dir))?;
    // Merged-usr layout, as on Debian 12 and Ubuntu 22.04 hosts.
    for (link, always) in [
        ("bin", true),
        ("lib", true),
        ("sbin", false),
        ("lib64", false),
        ("lib32", false),
        ("libx32", false),
    ] {
        if always || usr.join(link).exists() {
            ensure_symlink(&dir.join(link), &Path::new("usr").join(link))?;
        }
    }
    // The root filesystem is read-only; programs that use /var/tmp get the
    // container's writable /tmp.
    ensure_symlink(&dir.join("var/tmp"), Path::new("/tmp"))?;

    let etc = dir.join("etc");
    create_dir(&etc, 0o755)?;
    // Remove anything not generated here: the stack's /etc must never
    // carry host secrets, whatever an older build or a human left there.
    for entry in fs::read_dir(&etc).map_err(io_err(&etc))? {
        let entry = entry.map_err(io_err(&etc))?;
        let file_name = entry.file_name();
        if !ETC_ALLOWED.iter().any(|a| file_name == *a) {
            remove_any(&entry.path())?;
        }
    }
    let user = CONTAINER_USER;
    let (uid, gid) = (CONTAINER_UID, CONTAINER_GID);
    write_if_changed(
        &etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\n\
             {user}:x:{uid}:{gid}::/home/{user}:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        .as_bytes(),
    )?;
    write_if_changed(
        &etc.join("group"),
        format!("root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n").as_bytes(),
    )?;
    write_if_changed(
        &etc.join("hosts"),
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write_if_changed(
        &etc.join("nsswitch.conf"),
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
          networks: files\nprotocols: files\nservices: files\nethers: files\nrpc: files\n",
    )?;
    ensure_symlink(&etc.join("mtab"), Path::new("/proc/self/mounts"))?;
    // Name resolution must work as on the host (host network namespace).
    let resolv = fs::read(host_root.join("etc/resolv.conf")).unwrap_or_default();
    write_if_changed(&etc.join("resolv.conf"), &resolv)?;
    // The userland's own description, so tools that read it are not lied to.
    let os_release = fs::read(host_root.join("etc/os-release"))
        .or_else(|_| fs::read(host_root.join("usr/lib/os-release")))
        .unwrap_or_default();
    write_if_changed(&etc.join("os-release"), &os_release)?;
    // The dynamic loader's cache, or every program falls back to slow scans.
    match fs::read(host_root.join("etc/ld.so.cache")) {
        Ok(cache) => write_if_changed(&etc.join("ld.so.cache"), &cache)?,
        Err(_) => remove_any(&etc.join("ld.so.cache"))?,
    }
    if let Ok(target) = fs::read_link(host_root.join("etc/localtime")) {
        ensure_symlink(&etc.join("localtime"), &target)?;
    }
    // CA certificates: /etc/ssl/certs (the bundle, and the hash symlinks
    // that point into /usr/share/ca-certificates) and openssl.cnf. The rest
    // of /etc/ssl (private keys) stays on the host.
    mirror_tree(
        &host_root.join("etc/ssl/certs"),
        &etc.join("ssl/certs"),
        &|_| true,
    )?;
    prune_except(&etc.join("ssl"), &["certs", "openssl.cnf"])?;
    copy_host_files(dir, host_root)?;
    // Debian's alternatives are symlinks only (`python3` → …); files there
    // would be host configuration, so only symlinks are copied.
    mirror_tree(
        &host_root.join("etc/alternatives"),
        &etc.join("alternatives"),
        &|m| m.file_type().is_symlink(),
    )?;

    // cflinuxfs4 links /app to the app's directory; some start commands
    // and buildpacks name it.
    ensure_symlink(&dir.join("app"), Path::new("/home/vcap/app"))?;

    let locales = build_locales(dir, host_root)?;

    Ok(Stack {
        name: name.into(),
        rootfs: dir.to_path_buf(),
        usr,
        locales,
    })
}

/// The locale Kiln's `LANG` names in every container (as CF sets it).
pub const LOCALE: &str = "en_US.UTF-8";
/// Its directory name as glibc looks it up (the codeset normalized).
const LOCALE_DIR: &str = "en_US.utf8";

/// The stack's locale directory, beside its root filesystem: the host's
/// `/usr/lib/locale` copied (never pruned, so the compiled locale stays)
/// and [`LOCALE`] compiled once with `localedef` from the host's locale
/// sources (Debian's `locales`). Without the sources or `localedef` the
/// stack has no directory of its own and a warning says why.
fn build_locales(dir: &Path, host_root: &Path) -> Result<Option<PathBuf>, StackError> {
    let mut out = dir.as_os_str().to_owned();
    out.push(".locales");
    let out = PathBuf::from(out);
    create_dir(&out, 0o755)?;
    let host = host_root.join("usr/lib/locale");
    if let Ok(entries) = fs::read_dir(&host) {
        for entry in entries {
            let entry = entry.map_err(io_err(&host))?;
            let (src, dst) = (entry.path(), out.join(entry.file_name()));
            let meta = fs::symlink_metadata(&src).map_err(io_err(&src))?;
            if meta.file_type().is_symlink() {
                ensure_symlink(&dst, &fs::read_link(&src).map_err(io_err(&src))?)?;
            } else if meta.is_dir() {
                mirror_tree(&src, &dst, &|_| true)?;
            } else if meta.is_file() {
                write_if_changed(&dst, &fs::read(&src).map_err(io_err(&src))?)?;
            }
        }
    }
    if !out.join(LOCALE_DIR).join("LC_CTYPE").is_file()
        && let Err(reason) = compile_locale(&out, host_root)
    {
        tracing::warn!(%reason, locale = LOCALE, "the stack has no {LOCALE} locale: programs will fall back to C");
        return Ok(None);
    }
    ensure_symlink(&out.join(LOCALE), Path::new(LOCALE_DIR))?;
    Ok(Some(out))
}

/// `localedef -i en_US -f UTF-8 OUT/en_US.utf8`, from the host's sources.
fn compile_locale(out: &Path, host_root: &Path) -> Result<(), String> {
    let i18n = host_root.join("usr/share/i18n");
    let localedef = host_root.join("usr/bin/localedef");
    if !i18n.join("locales/en_US").is_file() || !localedef.is_file() {
        return Err(format!(
            "{} or {} is missing (Debian's locales package)",
            i18n.join("locales/en_US").display(),
            localedef.display()
        ));
    }
    let target = out.join(LOCALE_DIR);
    let result = std::process::Command::new(&localedef)
        .env("I18NPATH", &i18n)
        .args(["-i", "en_US", "-f", "UTF-8"])
        .arg(&target)
        .output()
        .map_err(|e| format!("running {}: {e}", localedef.display()))?;
    // localedef exits 1 for warnings with the output written.
    if target.join("LC_CTYPE").is_file() {
        return Ok(());
    }
    Err(format!(
        "localedef failed ({}): {}",
        result.status,
        String::from_utf8_lossy(&result.stderr).trim()
    ))
}

/// The host files of [`HOST_ETC_FILES`], apt's sources and keys, and
/// dpkg's list of installed packages (buildpacks such as apt's read it to
/// know what the stack has); each removed when the host has none.
fn copy_host_files(dir: &Path, host_root: &Path) -> Result<(), StackError> {
    let etc = dir.join("etc");
    let copy = |from: PathBuf, to: PathBuf| -> Result<(), StackError> {
        match fs::read(&from) {
            Ok(content) => {
                if let Some(parent) = to.parent() {
                    create_dir(parent, 0o755)?;
                }
                write_if_changed(&to, &content)
            }
            Err(_) => remove_any(&to),
        }
    };
    for file in HOST_ETC_FILES {
        copy(host_root.join("etc").join(file), etc.join(file))?;
    }
    copy(
        host_root.join("etc/apt/sources.list"),
        etc.join("apt/sources.list"),
    )?;
    for sub in HOST_APT_DIRS {
        mirror_tree(
            &host_root.join("etc/apt").join(sub),
            &etc.join("apt").join(sub),
            &|_| true,
        )?;
    }
    prune_except(
        &etc.join("apt"),
        &["sources.list", "sources.list.d", "trusted.gpg.d"],
    )?;
    copy(
        host_root.join("var/lib/dpkg/status"),
        dir.join("var/lib/dpkg/status"),
    )
}

fn create_dir(path: &Path, mode: u32) -> Result<(), StackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => remove_any(path)?,
        Err(_) => {}
    }
    fs::create_dir_all(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn remove_any(path: &Path) -> Result<(), StackError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err(path))
}

fn ensure_symlink(link: &Path, target: &Path) -> Result<(), StackError> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    // A new link renamed over the old one: a rebuild while containers
    // start never shows the link missing.
    let tmp = link.with_extension("kiln-tmp");
    remove_any(&tmp)?;
    symlink(target, &tmp).map_err(io_err(&tmp))?;
    if fs::symlink_metadata(link).is_ok_and(|m| m.is_dir()) {
        remove_any(link)?;
    }
    fs::rename(&tmp, link).map_err(io_err(link))
}

fn write_if_changed(path: &Path, content: &[u8]) -> Result<(), StackError> {
    let same = fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && fs::read(path).is_ok_and(|c| c == content);
    if !same {
        remove_any(path)?;
        let tmp = path.with_extension("kiln-tmp");
        fs::write(&tmp, content).map_err(io_err(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
    }
    Ok(())
}

/// Removes every entry of `dir` whose name is not in `keep`.
fn prune_except(dir: &Path, keep: &[&str]) -> Result<(), StackError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if !keep.iter().any(|k| entry.file_name() == *k) {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

/// Makes `to` a copy of `from` (regular files, symlinks and directories
/// that pass `select`); entries of `to` that `from` lacks are removed. A
/// missing `from` yields an empty `to`.
fn mirror_tree(
    from: &Path,
    to: &Path,
    select: &dyn Fn(&fs::Metadata) -> bool,
) -> Result<(), StackError> {
    create_dir(to, 0o755)?;
    let mut wanted = Vec::new();
    if let Ok(entries) = fs::read_dir(from) {
        for entry in entries {
            let entry = entry.map_err(io_err(from))?;
            let src = entry.path();
            let dst = to.join(entry.file_name());
            let meta = fs::symlink_metadata(&src).map_err(io_err(&src))?;
            if !select(&meta) {
                continue;
            }
            if meta.file_type().is_symlink() {
                ensure_symlink(&dst, &fs::read_link(&src).map_err(io_err(&src))?)?;
            } else if meta.is_dir() {
                mirror_tree(&src, &dst, select)?;
            } else if meta.is_file() {
                write_if_changed(&dst, &fs::read(&src).map_err(io_err(&src))?)?;
            } else {
                continue;
            }
            wanted.push(entry.file_name());
        }
    }
    for entry in fs::read_dir(to).map_err(io_err(to))? {
        let entry = entry.map_err(io_err(to))?;
        if !wanted.contains(&entry.file_name()) {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_come_from_os_release() {
        let check = |text: &str, want: &str| assert_eq!(stack_name_from_os_release(text), want);
        check("ID=debian\nVERSION_ID=\"12\"\n", "debian12-host");
        check(
            "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"22.04\"\n",
            "ubuntu2204-host",
        );
        check("ID=arch\n", "arch-host");
        check("", "linux-host");
    }

    #[test]
    fn builds_a_stack_without_host_secrets_and_is_idempotent() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        for d in [
            "usr/bin",
            "usr/lib",
            "etc/ssl/certs",
            "etc/ssl/private",
            "etc/alternatives",
        ] {
            fs::create_dir_all(h.join(d)).unwrap();
        }
        fs::write(h.join("etc/shadow"), "root:secret").unwrap();
        fs::write(
            h.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000",
        )
        .unwrap();
        fs::write(h.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        fs::write(h.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
        fs::write(h.join("etc/ssl/certs/ca.pem"), "CERT").unwrap();
        symlink("ca.pem", h.join("etc/ssl/certs/abcd.0")).unwrap();
        fs::write(h.join("etc/ssl/private/key.pem"), "KEY").unwrap();
        fs::write(h.join("etc/alternatives/README"), "host config").unwrap();
        symlink("/usr/bin/python3.11", h.join("etc/alternatives/python3")).unwrap();

        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("stack");
        let stack = build_stack_from(&dir, "debian12-host", h).unwrap();
        assert_eq!(
            stack.rootfs_provider().to_string(),
            "preloaded:debian12-host"
        );
        // A stale secret from an older build is removed on rebuild.
        fs::write(dir.join("etc/shadow"), "stale").unwrap();
        build_stack_from(&dir, "debian12-host", h).unwrap();

        let etc = dir.join("etc");
        assert!(!etc.join("shadow").exists());
        assert!(!etc.join("ssl/private").exists());
        assert!(!etc.join("alternatives/README").exists());
        let passwd = fs::read_to_string(etc.join("passwd")).unwrap();
        assert!(passwd.contains("vcap:x:2000:2000::/home/vcap:/bin/bash"));
        assert!(!passwd.contains("alice"));
        assert_eq!(
            fs::read_to_string(etc.join("resolv.conf")).unwrap(),
            "nameserver 127.0.0.53\n"
        );
        assert_eq!(
            fs::read_to_string(etc.join("ssl/certs/ca.pem")).unwrap(),
            "CERT"
        );
        assert_eq!(
            fs::read_link(etc.join("ssl/certs/abcd.0")).unwrap(),
            Path::new("ca.pem")
        );
        assert_eq!(
            fs::read_link(etc.join("alternatives/python3")).unwrap(),
            Path::new("/usr/bin/python3.11")
        );
        assert_eq!(
            fs::read_link(dir.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(dir.join("home/vcap").is_dir());
        assert!(build_stack_from(&dir, "../x", h).is_err());
    }

    /// What buildpacks and apps read on cflinuxfs4 is there, apt's
    /// credentials are not, and a rebuild follows the host's changes.
    #[test]
    fn has_what_buildpacks_read_and_follows_the_host() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        for d in [
            "usr/bin",
            "etc/ssl/certs",
            "etc/alternatives",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "etc/apt/auth.conf.d",
            "var/lib/dpkg",
        ] {
            fs::create_dir_all(h.join(d)).unwrap();
        }
        let files = [
            (
                "etc/apt/sources.list",
                "deb http://deb.debian.org/debian bookworm main\n",
            ),
            ("etc/apt/sources.list.d/debian.sources", "Types: deb\n"),
            ("etc/apt/trusted.gpg.d/debian.asc", "KEY"),
            ("etc/apt/auth.conf.d/private.conf", "login secret"),
            ("etc/mime.types", "text/html html htm\n"),
            ("etc/timezone", "Etc/UTC\n"),
            ("etc/ssl/openssl.cnf", "openssl_conf = default_conf\n"),
            (
                "var/lib/dpkg/status",
                "Package: bash\nStatus: install ok installed\n",
            ),
        ];
        for (path, text) in files {
            fs::write(h.join(path), text).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("stack");
        build_stack_from(&dir, "debian12-host", h).unwrap();
        for (path, text) in files {
            let copied = fs::read_to_string(dir.join(path)).ok();
            if path.contains("auth.conf.d") {
                assert_eq!(copied, None, "{path} must stay on the host");
            } else {
                assert_eq!(copied.as_deref(), Some(text), "{path}");
            }
        }
        assert!(!dir.join("etc/apt/auth.conf.d").exists());
        assert_eq!(
            fs::read_link(dir.join("app")).unwrap(),
            Path::new("/home/vcap/app")
        );

        // The host changes: a tool installed, a package listed, a file gone.
        symlink("/usr/bin/node22", h.join("etc/alternatives/node")).unwrap();
        fs::write(h.join("var/lib/dpkg/status"), "Package: nodejs\n").unwrap();
        fs::remove_file(h.join("etc/timezone")).unwrap();
        build_stack_from(&dir, "debian12-host", h).unwrap();
        assert_eq!(
            fs::read_link(dir.join("etc/alternatives/node")).unwrap(),
            Path::new("/usr/bin/node22")
        );
        assert_eq!(
            fs::read_to_string(dir.join("var/lib/dpkg/status")).unwrap(),
            "Package: nodejs\n"
        );
        assert!(!dir.join("etc/timezone").exists());
        // No scratch files left behind by the renames.
        let leftovers: Vec<_> = fs::read_dir(dir.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("kiln-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
