//! forge cache crate (work in progress).
