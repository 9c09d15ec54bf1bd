use snapshot::with_snapshot;

struct App {
    snapshots: String,
}

impl App {
    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete(&self, id: i64) -> snapshot::Result<()> {
        Ok(())
    }
}

fn main() {
    let _ = App {
        snapshots: String::new(),
    }
    .delete(1);
}
