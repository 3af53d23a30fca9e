//! An image's `USER` as numbers, read from the image's own `/etc/passwd`
//! and `/etc/group`, as Docker does: `name`, `uid`, `name:group`,
//! `uid:gid` and mixes; a numeric user missing from passwd is still that
//! uid (gid 0 unless given); a name missing from passwd is an error.
//!
//! The files are read from the unpacked layers, top layer first, without
//! mounting anything and without following links: the topmost layer that
//! has `etc/passwd` as a regular file wins; a whiteout or an opaque `etc`
//! above it hides the lower ones; a symlinked `etc` or `passwd` counts as
//! absent (resolving it on the host could read the host's files).

use crate::ImageError;
use crate::unpack::OPAQUE_XATTR;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The process identity an image's `USER` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    pub uid: u32,
    pub gid: u32,
    /// The home directory from passwd, when the user is listed there.
    pub home: Option<String>,
}

/// Resolves `user` (the image config's `User`; empty means root) against
/// the image whose layers are `lowers`, bottom first.
pub fn lookup_user(lowers: &[PathBuf], user: &str) -> Result<ImageUser, ImageError> {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let unknown = |why: String| ImageError::UnknownUser {
        user: user.to_string(),
        why,
    };
    let passwd = image_file(lowers, "passwd")?.unwrap_or_default();
    let entry = if name.is_empty() {
        passwd_entry(&passwd, |e| e.uid == 0)
    } else if let Ok(uid) = name.parse::<u32>() {
        passwd_entry(&passwd, |e| e.uid == uid).or(Some(PasswdEntry {
            name: String::new(),
            uid,
            gid: 0,
            home: None,
        }))
    } else {
        passwd_entry(&passwd, |e| e.name == name)
    };
    let entry = entry.unwrap_or_else(|| PasswdEntry {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: None,
    });
    if !name.is_empty() && name.parse::<u32>().is_err() && entry.name != name {
        return Err(unknown("no such name in the image's /etc/passwd".into()));
    }
    let gid = match group {
        None | Some("") => entry.gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = image_file(lowers, "group")?.unwrap_or_default();
                group_gid(&groups, group).ok_or_else(|| {
                    unknown(format!("no group {group:?} in the image's /etc/group"))
                })?
            }
        },
    };
    Ok(ImageUser {
        uid: entry.uid,
        gid,
        home: entry.home,
    })
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: Option<String>,
}

fn passwd_entry(passwd: &str, want: impl Fn(&PasswdEntry) -> bool) -> Option<PasswdEntry> {
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields
                    .get(5)
                    .filter(|h| !h.is_empty())
                    .map(|h| h.to_string()),
            })
        })
        .find(|e| want(e))
}

fn group_gid(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 3 && fields[0] == name)
            .then(|| fields[2].parse().ok())
            .flatten()
    })
}

/// `etc/<name>` as the merged image shows it, or `None` when it has none.
fn image_file(lowers: &[PathBuf], name: &str) -> Result<Option<String>, ImageError> {
    for layer in lowers.iter().rev() {
        let etc = layer.join("etc");
        let Ok(meta) = fs::symlink_metadata(&etc) else {
            continue;
        };
        if !meta.is_dir() {
            // A whiteout, a file or a link: the image has no /etc/<name>
            // we would read.
            return Ok(None);
        }
        let path = etc.join(name);
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if meta.file_type().is_char_device() || !meta.is_file() {
                return Ok(None);
            }
            return read_no_follow(&path).map(Some);
        }
        if is_opaque(&etc) {
            return Ok(None);
        }
    }
    Ok(None)
}

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 1];
    rustix::fs::lgetxattr(dir, OPAQUE_XATTR, &mut value).is_ok_and(|n| n == 1 && value[0] == b'y')
}

fn read_no_follow(path: &Path) -> Result<String, ImageError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(ImageError::io("reading", path))?;
    let mut text = String::new();
    // A passwd file of a megabyte is already absurd.
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(ImageError::io("reading", path))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    fn image(layers: &[&[(&str, &str)]]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let tmp = tempfile::tempdir().unwrap();
        let mut lowers = Vec::new();
        for (i, files) in layers.iter().enumerate() {
            let layer = tmp.path().join(i.to_string());
            for (path, content) in *files {
                let path = layer.join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, content).unwrap();
            }
            fs::create_dir_all(&layer).unwrap();
            lowers.push(layer);
        }
        (tmp, lowers)
    }

    fn check(user: &str, want: Option<(u32, u32)>) {
        let (_tmp, lowers) = image(&[
            &[("etc/passwd", "root:x:0:0::/root:/bin/sh\n")],
            &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
        ]);
        let got = lookup_user(&lowers, user).ok().map(|u| (u.uid, u.gid));
        assert_eq!(got, want, "{user:?}");
    }

    #[test]
    fn users_resolve_as_docker_resolves_them() {
        check("", Some((0, 0)));
        check("root", Some((0, 0)));
        check("app", Some((1000, 1001)));
        check("1000", Some((1000, 1001)));
        check("4242", Some((4242, 0)));
        check("4242:77", Some((4242, 77)));
        check("app:staff", Some((1000, 50)));
        check("app:50", Some((1000, 50)));
        check("nobody", None);
        check("app:nogroup", None);
    }

    #[test]
    fn the_top_layer_wins_and_home_comes_along() {
        let (_tmp, lowers) = image(&[
            &[("etc/passwd", "app:x:1:1::/old:/bin/sh\n")],
            &[("etc/passwd", PASSWD)],
        ]);
        let user = lookup_user(&lowers, "app").unwrap();
        assert_eq!((user.uid, user.home.as_deref()), (1000, Some("/home/app")));
    }

    #[test]
    fn a_symlinked_passwd_is_never_followed() {
        let (tmp, lowers) = image(&[&[("etc/.keep", "")]]);
        std::os::unix::fs::symlink("/etc/passwd", lowers[0].join("etc/passwd")).unwrap();
        assert!(lookup_user(&lowers, "root").is_ok_and(|u| u.uid == 0));
        assert!(
            lookup_user(&lowers, "daemon").is_err(),
            "host passwd not read"
        );
        drop(tmp);
    }
}
