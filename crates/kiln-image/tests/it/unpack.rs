//! `unpack_layer` on layers built by the test: what is kept, what becomes a
//! whiteout, what is refused (and that a refusal writes nothing outside).

use kiln_image::testing::{LayerBuilder, TestLayer, is_root, skip_or_fail};
use kiln_image::{ImageError, UnpackOptions, UnpackStats, unpack_layer};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const OPTIONS: UnpackOptions = UnpackOptions {
    id_offset: 0,
    max_bytes: 1 << 20,
};

fn unpack(
    dir: &Path,
    layer: &TestLayer,
    options: UnpackOptions,
) -> Result<UnpackStats, ImageError> {
    let blob = dir.join("blob");
    fs::write(&blob, &layer.blob).unwrap();
    unpack_layer(&blob, "sha256:test", &dir.join("root/layer"), options)
}

fn prepared() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("root")).unwrap();
    tmp
}

#[test]
fn keeps_files_dirs_links_and_modes_without_setuid() {
    let tmp = prepared();
    let layer = LayerBuilder::new()
        .dir("./etc/")
        .file("etc/hostname", b"kiln\n")
        .file_with_mode("bin/tool", b"#!/bin/sh\n", 0o4755)
        .file_with_mode("tmp/.keep", b"", 0o644)
        .hardlink("bin/tool-again", "bin/tool")
        .symlink("lib", "usr/lib")
        .symlink("etc/escape", "../../../../etc/passwd")
        .symlink("etc/abs", "/etc/hostname")
        .gzip();
    let stats = unpack(tmp.path(), &layer, OPTIONS).unwrap();
    let root = tmp.path().join("root/layer");
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "kiln\n"
    );
    let mode = fs::metadata(root.join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid dropped");
    assert_eq!(
        fs::metadata(root.join("bin/tool")).unwrap().ino(),
        fs::metadata(root.join("bin/tool-again")).unwrap().ino(),
        "hard link within the layer"
    );
    // Links are kept as they are; they resolve inside the container.
    assert_eq!(
        fs::read_link(root.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    assert_eq!(
        fs::read_link(root.join("etc/escape")).unwrap(),
        Path::new("../../../../etc/passwd")
    );
    assert_eq!(
        fs::read_link(root.join("etc/abs")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(stats.files, 4);
}

#[test]
fn plain_tar_layers_unpack_too() {
    let tmp = prepared();
    let layer = LayerBuilder::new().file("a", b"plain").plain();
    unpack(tmp.path(), &layer, OPTIONS).unwrap();
    assert_eq!(
        fs::read_to_string(tmp.path().join("root/layer/a")).unwrap(),
        "plain"
    );
}

#[test]
fn owners_are_kept_and_shifted_by_the_offset() {
    if !is_root() {
        skip_or_fail("owners_are_kept_and_shifted_by_the_offset", "not root");
        return;
    }
    let tmp = prepared();
    let layer = LayerBuilder::new()
        .file_owned("home/app/data", b"x", 1000, 1001)
        .gzip();
    let shifted = UnpackOptions {
        id_offset: 100_000,
        ..OPTIONS
    };
    unpack(tmp.path(), &layer, shifted).unwrap();
    let meta = fs::metadata(tmp.path().join("root/layer/home/app/data")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101_000, 101_001));
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_dirs() {
    if !is_root() {
        skip_or_fail(
            "whiteouts_become_overlay_whiteouts_and_opaque_dirs",
            "not root (mknod, trusted xattrs)",
        );
        return;
    }
    let tmp = prepared();
    let layer = LayerBuilder::new()
        .whiteout("etc/gone")
        .opaque("var/cache")
        .file("var/cache/new", b"new")
        .file(".wh..wh.plnk/123", b"")
        .gzip();
    let stats = unpack(tmp.path(), &layer, OPTIONS).unwrap();
    let root = tmp.path().join("root/layer");
    let gone = fs::symlink_metadata(root.join("etc/gone")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!root.join("etc/.wh.gone").exists());
    let mut value = [0u8; 4];
    let n = rustix::fs::lgetxattr(root.join("var/cache"), "trusted.overlay.opaque", &mut value)
        .unwrap();
    assert_eq!(&value[..n], b"y");
    assert!(!root.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(
        fs::read_to_string(root.join("var/cache/new")).unwrap(),
        "new"
    );
    assert_eq!(stats.whiteouts, 2);
}

#[test]
fn refuses_unsafe_entries_and_writes_nothing_outside() {
    let cases: Vec<(&str, LayerBuilder)> = vec![
        ("dot-dot path", LayerBuilder::new().file("../x", b"x")),
        (
            "nested dot-dot",
            LayerBuilder::new().file("a/../../x", b"x"),
        ),
        ("absolute path", LayerBuilder::new().file("/x", b"x")),
        (
            "escaping hard link",
            LayerBuilder::new().hardlink("h", "../../x"),
        ),
        (
            "absolute hard link",
            LayerBuilder::new().hardlink("h", "/etc/passwd"),
        ),
        (
            "hard link to a missing file",
            LayerBuilder::new().hardlink("h", "nothing"),
        ),
        (
            "hard link to a symlink",
            LayerBuilder::new()
                .symlink("s", "/etc/passwd")
                .hardlink("h", "s"),
        ),
        (
            "write through a symlink",
            LayerBuilder::new().symlink("l", "..").file("l/x", b"x"),
        ),
        (
            "write through an absolute symlink",
            LayerBuilder::new().symlink("l", "/tmp").file("l/x", b"x"),
        ),
        ("device node", LayerBuilder::new().char_device("dev/kmsg")),
        ("fifo", LayerBuilder::new().fifo("pipe")),
    ];
    for (case, layer) in cases {
        let tmp = prepared();
        let err = unpack(tmp.path(), &layer.gzip(), OPTIONS).unwrap_err();
        assert!(matches!(err, ImageError::BadLayer { .. }), "{case}: {err}");
        assert!(
            err.to_string().contains("bad layer content"),
            "{case}: {err}"
        );
        assert!(!tmp.path().join("root/x").exists(), "{case}");
        assert!(!tmp.path().join("x").exists(), "{case}");
    }
}

#[test]
fn a_layer_unpacking_past_the_limit_is_too_large() {
    let tmp = prepared();
    // Compresses to a small fraction (how small depends on the deflate
    // backend cargo unifies for the workspace), unpacks to 2 MiB.
    let layer = LayerBuilder::new()
        .file("zeros", &vec![0u8; 2 << 20])
        .gzip();
    assert!(layer.blob.len() < (2 << 20) / 16, "{}", layer.blob.len());
    let err = unpack(tmp.path(), &layer, OPTIONS).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
}

#[test]
fn garbage_is_bad_layer_content() {
    let tmp = prepared();
    let layer = TestLayer {
        blob: vec![0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    let err = unpack(tmp.path(), &layer, OPTIONS).unwrap_err();
    assert!(matches!(err, ImageError::BadLayer { .. }), "{err}");
}

#[test]
fn a_gzip_of_several_members_unpacks_whole() {
    use std::io::Write;
    // Two files, the tar split across two gzip members as parallel
    // compressors write it.
    let tar = LayerBuilder::new()
        .file("first", &vec![1u8; 4096])
        .file("second", b"after the first member")
        .plain()
        .blob;
    let (a, b) = tar.split_at(tar.len() / 2);
    let mut blob = Vec::new();
    for part in [a, b] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(part).unwrap();
        blob.extend(gz.finish().unwrap());
    }
    let layer = TestLayer {
        blob,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    };
    let tmp = prepared();
    unpack(tmp.path(), &layer, OPTIONS).unwrap();
    assert_eq!(
        fs::read_to_string(tmp.path().join("root/layer/second")).unwrap(),
        "after the first member"
    );
}
