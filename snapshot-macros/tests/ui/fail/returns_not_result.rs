use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
fn delete(id: i64) -> bool {
    id > 0
}

fn main() {
    let _ = delete(1);
}
