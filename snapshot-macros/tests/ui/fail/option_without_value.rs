use snapshot::with_snapshot;

#[with_snapshot("delete", "measure", id = )]
fn delete(key: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    let _ = delete(1);
}
