use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
const fn delete(id: i64) -> snapshot::Result<i64> {
    Ok(id)
}

fn main() {
    let _ = delete(1);
}
