use snapshot::with_snapshot;

const DELETE: &str = "delete";

#[with_snapshot(DELETE, "measure")]
fn delete(id: i64) -> snapshot::Result<()> {
    Ok(())
}

fn main() {
    let _ = delete(1);
}
