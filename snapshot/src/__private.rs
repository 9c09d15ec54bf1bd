//! Support code for the code `#[with_snapshot]` generates. Not a stable API: do not use it
//! directly; it may change in any release.
