//! Every shape of function the attribute supports compiles without a warning, and runs.
#![deny(warnings)]

use std::fmt::Display;
use std::sync::Arc;

use snapshot::{
    Environment, FileSource, ListFilter, MemoryStore, Outcome, RetentionPolicy, SnapshotManager,
    with_snapshot,
};

type AppResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug)]
enum AppError {
    Snapshot,
}

impl From<snapshot::Error> for AppError {
    fn from(_: snapshot::Error) -> Self {
        AppError::Snapshot
    }
}

#[with_snapshot("delete", "measure", manager = m)]
fn free(m: &SnapshotManager, id: i64) -> snapshot::Result<i64> {
    Ok(id)
}

#[with_snapshot("delete", "measure", manager = m)]
fn with_question_mark(m: &SnapshotManager, measure_id: &str) -> AppResult<u32> {
    let n: u32 = measure_id.parse()?;
    if n == 0 {
        return Err("zero".into());
    }
    Ok(n)
}

#[with_snapshot("delete", "measure", manager = m)]
fn generic<'a, T, U>(m: &SnapshotManager, id: &'a T, extra: U) -> Result<&'a T, AppError>
where
    T: Display + ?Sized,
    U: Into<String>,
{
    let _: String = extra.into();
    Ok(id)
}

#[with_snapshot("delete", "measure", manager = m)]
fn impl_trait(m: &SnapshotManager, id: impl Display) -> snapshot::Result<impl Display> {
    Ok(format!("<{id}>"))
}

#[with_snapshot("delete", "measure", manager = m)]
fn inner_attributes(m: &SnapshotManager, id: u8) -> snapshot::Result<u8> {
    #![allow(clippy::identity_op)]
    Ok(id + 0)
}

#[with_snapshot("delete", "measure", manager = m)]
fn not_yet_written(m: &SnapshotManager, id: u8) -> snapshot::Result<u8> {
    let _ = (m, id);
    todo!()
}

#[allow(unsafe_code)]
#[with_snapshot("delete", "measure", manager = m)]
unsafe fn unsafe_fn(m: &SnapshotManager, id: u8) -> snapshot::Result<u8> {
    Ok(id)
}

struct App {
    snapshots: Arc<SnapshotManager>,
    items: Vec<u8>,
}

impl App {
    /// Docs and attributes stay where they were.
    #[must_use = "the result says whether the item was deleted"]
    #[with_snapshot("delete", "item", manager = self.snapshots)]
    pub fn by_ref(&self, id: usize) -> snapshot::Result<u8> {
        Ok(self.items[id])
    }

    #[with_snapshot("delete", "item", manager = self.snapshots)]
    pub fn by_mut(&mut self, item_id: usize) -> snapshot::Result<u8> {
        Ok(self.items.remove(item_id))
    }

    #[with_snapshot("delete", "item", manager = self.snapshots.clone())]
    pub fn by_value(self, item_id: usize) -> snapshot::Result<Self> {
        let _ = item_id;
        Ok(self)
    }

    #[with_snapshot("delete", "item", manager = self.snapshots)]
    pub fn returns_borrow(&mut self, id: usize) -> snapshot::Result<&mut u8> {
        Ok(&mut self.items[id])
    }

    #[with_snapshot("delete", "item", manager = self.snapshots)]
    pub async fn async_by_ref(&self, id: usize) -> snapshot::Result<u8> {
        Ok(self.items[id])
    }

    #[with_snapshot("delete", "item", manager = self.snapshots, on_error = "continue")]
    pub async fn async_by_value(self, id: usize) -> Result<Vec<u8>, String> {
        let _ = id;
        Ok(self.items)
    }
}

trait Delete {
    fn delete(&self, id: u8) -> snapshot::Result<u8>;
    async fn delete_later(&self, id: u8) -> snapshot::Result<u8>;
}

impl Delete for App {
    #[with_snapshot("delete", "item", manager = self.snapshots)]
    fn delete(&self, id: u8) -> snapshot::Result<u8> {
        Ok(id)
    }

    #[with_snapshot("delete", "item", manager = self.snapshots)]
    async fn delete_later(&self, id: u8) -> snapshot::Result<u8> {
        Ok(id)
    }
}

#[with_snapshot("delete", "grant", manager = m)]
async fn async_free<T: Display + Send + Sync>(
    m: &SnapshotManager,
    grant_id: T,
) -> AppResult<String> {
    Ok(grant_id.to_string())
}

fn assert_send<T: Send>(_: &T) {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("data.bin");
    std::fs::write(&file, b"live")?;
    let m = SnapshotManager::builder()
        .source(FileSource::new(&file))
        .store(MemoryStore::new())
        .retention(RetentionPolicy::new().keep_last(100))
        .environment(Environment::persistent())
        .build()?;

    assert_eq!(free(&m, 1)?, 1);
    assert_eq!(with_question_mark(&m, "7").map_err(|e| e.to_string())?, 7);
    assert!(with_question_mark(&m, "x").is_err());
    assert!(with_question_mark(&m, "0").is_err());
    assert_eq!(
        *generic(&m, "str", "x").map_err(|e| format!("{e:?}"))?,
        *"str"
    );
    assert_eq!(impl_trait(&m, 3)?.to_string(), "<3>");
    assert_eq!(inner_attributes(&m, 4)?, 4);
    #[allow(unsafe_code)]
    let v = unsafe { unsafe_fn(&m, 5)? };
    assert_eq!(v, 5);
    let mut app = App {
        snapshots: Arc::new(m.clone()),
        items: vec![10, 11, 12],
    };
    assert_eq!(app.by_ref(0)?, 10);
    assert_eq!(app.by_mut(0)?, 10);
    *app.returns_borrow(0)? += 1;
    assert_eq!(app.delete(9)?, 9);
    assert_send(&app.async_by_ref(0));
    assert_send(&app.delete_later(0));
    assert_send(&async_free(&m, 1));
    let app = app.by_value(0)?;
    assert_send(&app.async_by_value(0));

    let records = m.list(&ListFilter::new())?;
    assert_eq!(records.len(), 13);
    let failed = records
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    assert_eq!(failed, 2);
    let _ = not_yet_written;
    Ok(())
}
