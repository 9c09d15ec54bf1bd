use snapshot::with_snapshot;

#[with_snapshot("delete", "measure", entity_id = id)]
fn delete(id: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    let _ = delete(1);
}
