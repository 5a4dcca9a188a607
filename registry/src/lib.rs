//! forge registry crate (work in progress).
