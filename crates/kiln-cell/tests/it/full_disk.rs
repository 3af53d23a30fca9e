//! A cell whose disk is full: it says so in its presence, and work that
//! needs disk fails at once with Diego's words instead of waiting or
//! failing obscurely.

use crate::support::*;
use kiln_bbs::BbsClient;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A small tmpfs mounted over a directory for the test, unmounted on drop
/// (also when the test fails).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size_mb: u64) -> SmallFs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m"),
                "kiln-test",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        SmallFs(dir.to_path_buf())
    }

    /// Writes zeros until the file system is full.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..1024 {
            if file.write_all(&chunk).is_err() {
                return;
            }
        }
        panic!("the small file system did not fill up");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn reported_disk_mb(cell: &TestCell) -> Option<u64> {
    let cells = cell.bbs.cells().await.unwrap();
    cells
        .iter()
        .find(|c| c.cell_id == cell.config.cell_id)
        .map(|c| c.capacity.disk_mb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_with_a_full_disk_reports_it_and_a_staging_task_fails_at_once_saying_so() {
    if !runc_available(
        "a_cell_with_a_full_disk_reports_it_and_a_staging_task_fails_at_once_saying_so",
    ) {
        return;
    }
    let cell = TestCell::start(63190..63195).await;
    // Configured 64 GB, capped at what the machine's disk has free.
    let before = reported_disk_mb(&cell).await.unwrap();
    assert!(before <= 65_536 && before > 32, "{before}");

    // The containers' file system shrinks to 32 MB: the presence follows.
    let fs = SmallFs::mount(&cell.config.data_dir.join("containers"), 32);
    eventually(
        "the small disk reported",
        Duration::from_secs(10),
        || async { reported_disk_mb(&cell).await.filter(|mb| *mb <= 32) },
    )
    .await;
    // Full: nothing free left to report.
    fs.fill();
    eventually(
        "the full disk reported",
        Duration::from_secs(10),
        || async { reported_disk_mb(&cell).await.filter(|mb| *mb == 0) },
    )
    .await;

    let mut def = task_definition(&cell.stack, "app-1", sh("true"));
    def.disk_mb = 16;
    let task_guid = guid();
    cell.desire_task(&task_guid, def).await;
    let task = cell
        .completed_task(&task_guid, Duration::from_secs(5))
        .await;
    assert!(task.failed);
    assert_eq!(task.failure_reason, "insufficient resources: disk");

    drop(fs);
}
