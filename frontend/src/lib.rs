//! forge library facade (work in progress).
