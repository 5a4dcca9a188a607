//! forge solver crate (work in progress).
