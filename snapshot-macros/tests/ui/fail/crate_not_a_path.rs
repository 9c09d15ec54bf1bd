use snapshot::with_snapshot;

#[with_snapshot("delete", "measure", crate = "my snapshot")]
fn delete(id: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    let _ = delete(1);
}
