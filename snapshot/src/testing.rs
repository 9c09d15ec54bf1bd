//! Conformance suites that implementers of the library's plugin traits run in their own tests
//! (feature `test-util`): [`store`] for a [`Store`](crate::Store) and every decorator of one,
//! [`table`] for an engine's record-level operations (preview, compare, table restore, undo).
//!
//! Each check is a function taking a factory of fresh fixtures and returning a [`Check`]; a
//! macro turns the whole suite into `#[test]` functions:
//!
//! ```
//! # #[cfg(any())] // a compiled sketch: the macro expands to #[test] functions
//! mod memory {
//!     fn fixture() -> snapshot::testing::store::StoreFixture {
//!         snapshot::testing::store::StoreFixture::new(snapshot::MemoryStore::new())
//!     }
//!     snapshot::store_conformance!(fixture);
//! }
//! ```

#[cfg(feature = "api-emulator")]
pub mod api_emulator;
pub mod store;
pub mod table;

use std::fmt;

/// Why a conformance check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Failure(format!("unexpected error: {e}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(format!("unexpected I/O error: {e}"))
    }
}

/// The outcome of one conformance check.
pub type Check = Result<(), Failure>;

/// Fails the check with a message when `cond` is false.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::testing::Failure(format!($($msg)+)));
        }
    };
    ($cond:expr) => {
        if !$cond {
            return Err($crate::testing::Failure(format!("check failed: {}", stringify!($cond))));
        }
    };
}
pub(crate) use check;

/// Fails the check with a message.
macro_rules! fail {
    ($($msg:tt)+) => {
        return Err($crate::testing::Failure(format!($($msg)+)))
    };
}
pub(crate) use fail;
