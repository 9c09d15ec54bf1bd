//! Host of the example apps and integration tests.
