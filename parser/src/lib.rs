//! forge parser crate (work in progress).
