use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
fn delete(id: i64) {
    let _ = id;
}

fn main() {
    delete(1);
}
