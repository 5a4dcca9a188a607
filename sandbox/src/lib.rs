//! forge sandbox crate (work in progress).
