use snapshot::with_snapshot;

#[with_snapshot("delete", "measure")]
struct Measure {
    id: i64,
}

fn main() {
    let _ = Measure { id: 1 }.id;
}
