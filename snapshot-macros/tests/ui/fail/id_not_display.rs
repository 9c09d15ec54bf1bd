use snapshot::with_snapshot;

struct MeasureKey {
    id: i64,
}

#[with_snapshot("delete", "measure")]
fn delete(measure_id: MeasureKey) -> snapshot::Result<i64> {
    Ok(measure_id.id)
}

fn main() {
    let _ = delete(MeasureKey { id: 1 });
}
