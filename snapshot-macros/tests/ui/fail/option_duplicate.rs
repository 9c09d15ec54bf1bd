use snapshot::with_snapshot;

#[with_snapshot("delete", "measure", id = a, id = b)]
fn delete(a: i64, b: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    let _ = delete(1, 2);
}
