//! Image references (written by the registry helper).
