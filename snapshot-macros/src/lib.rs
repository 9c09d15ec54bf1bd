//! Procedural macros of the `snapshot` crate. Use them through `snapshot`.
