use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
fn delete(id: i64, measure_id: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    let _ = delete(1, 2);
}
