use snapshot::with_snapshot;

#[with_snapshot]
fn delete(id: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    // The function is still there: no second error about it.
    let _ = delete(1);
}
