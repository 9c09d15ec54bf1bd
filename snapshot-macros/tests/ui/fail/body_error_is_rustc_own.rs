use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
fn delete(id: i64) -> snapshot::Result<i64> {
    let n: i64 = "not a number";
    Ok(id + n)
}

fn main() {
    let _ = delete(1);
}
