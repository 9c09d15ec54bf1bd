//! `crate = "…"`: the `snapshot` crate under another name.
#![deny(warnings)]

extern crate snapshot as snap;

use snap::{Environment, FileSource, ListFilter, MemoryStore, SnapshotManager};

#[snap::with_snapshot("delete", "measure", manager = m, crate = "snap")]
fn delete(m: &SnapshotManager, id: i64) -> snap::Result<i64> {
    Ok(id)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("data.bin");
    std::fs::write(&file, b"live")?;
    let m = SnapshotManager::builder()
        .source(FileSource::new(&file))
        .store(MemoryStore::new())
        .environment(Environment::persistent())
        .build()?;
    assert_eq!(delete(&m, 4)?, 4);
    assert_eq!(
        m.list(&ListFilter::new())?[0].entity_id.as_deref(),
        Some("4")
    );
    Ok(())
}
