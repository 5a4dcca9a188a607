//! (runner to be written)
