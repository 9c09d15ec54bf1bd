use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
fn delete(id: i64) -> Result<(), String> {
    if id < 0 {
        return Err(format!("bad id {id}"));
    }
    Ok(())
}

fn main() {
    let _ = delete(1);
}
