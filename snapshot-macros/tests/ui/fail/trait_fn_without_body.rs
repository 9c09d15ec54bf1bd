use snapshot::with_snapshot;

trait Measures {
    #[with_snapshot("delete", "measure")]
    fn delete(&self, id: i64) -> snapshot::Result<()>;
}

fn main() {}
