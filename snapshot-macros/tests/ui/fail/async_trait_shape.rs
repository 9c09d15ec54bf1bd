use std::future::Future;
use std::pin::Pin;

use snapshot::with_snapshot;

trait Measures {
    fn delete(&self, id: i64) -> Pin<Box<dyn Future<Output = snapshot::Result<()>> + Send + '_>>;
}

struct Store;

// What `#[async_trait]` makes of `async fn delete(&self, id: i64) -> snapshot::Result<()>`.
impl Measures for Store {
    #[with_snapshot("delete", "measure")]
    fn delete(&self, id: i64) -> Pin<Box<dyn Future<Output = snapshot::Result<()>> + Send + '_>> {
        Box::pin(async move {
            let _ = id;
            Ok(())
        })
    }
}

fn main() {
    let _ = Store.delete(1);
}
