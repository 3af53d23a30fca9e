//! The host-derived stack built from this machine's real files.

use std::fs;

#[test]
fn host_stack_has_a_generated_etc_without_host_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let name = kiln_cell::stack::host_stack_name();
    assert!(name.ends_with("-host"), "{name}");
    let root = dir.path().join("stack");
    let started = std::time::Instant::now();
    let stack = kiln_cell::stack::build_host_stack(&root, &name).unwrap();
    let first = started.elapsed();
    let started = std::time::Instant::now();
    kiln_cell::stack::build_host_stack(&root, &name).unwrap();
    let again = started.elapsed();
    eprintln!("stack build: first {first:?}, idempotent rebuild {again:?}");

    assert_eq!(stack.rootfs, root);
    let etc = root.join("etc");
    assert!(
        !etc.join("shadow").exists(),
        "host /etc/shadow must never be in the stack"
    );
    assert!(!etc.join("gshadow").exists());
    assert!(!etc.join("ssh").exists());
    assert!(!etc.join("ssl/private").exists());
    let passwd = fs::read_to_string(etc.join("passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("vcap:x:2000:2000:")),
        "{passwd}"
    );
    let group = fs::read_to_string(etc.join("group")).unwrap();
    assert!(group.lines().any(|l| l == "vcap:x:2000:"), "{group}");
    for f in ["hosts", "resolv.conf", "nsswitch.conf", "os-release"] {
        assert!(etc.join(f).is_file(), "{f}");
    }
    if std::path::Path::new("/etc/ssl/certs").is_dir() {
        assert!(etc.join("ssl/certs").is_dir());
    }
    if std::path::Path::new("/etc/ld.so.cache").is_file() {
        assert!(etc.join("ld.so.cache").is_file());
    }
    // Nothing in the stack's /etc but what the stack allows.
    for entry in fs::read_dir(&etc).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            kiln_cell::stack::ETC_ALLOWED.iter().any(|a| name == *a),
            "unexpected {name:?} in the stack's /etc"
        );
    }
    for dir in ["usr", "proc", "dev", "sys", "tmp", "home/vcap"] {
        assert!(root.join(dir).is_dir(), "{dir}");
    }
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        std::path::Path::new("usr/bin")
    );
}
