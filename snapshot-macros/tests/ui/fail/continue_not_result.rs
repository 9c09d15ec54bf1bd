use snapshot::with_snapshot;

#[with_snapshot("delete", "measure", on_error = "continue")]
fn delete(id: i64) -> Option<i64> {
    Some(id)
}

fn main() {
    let _ = delete(1);
}
