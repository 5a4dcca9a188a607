//! Cache keys: a versioned description of a step, hashed through one stable path.
//!
//! A key is blake3 over a length-prefixed encoding of [`KeyParts`]. Everything that can change a
//! step's output is in it; nothing else is (no mtimes, no host paths, no timestamps). Bump
//! [`KEY_VERSION`] whenever the encoding or the meaning of a field changes, so that old records
//! simply stop matching.

use std::fmt;

/// The version of the key encoding. Part of every key.
pub const KEY_VERSION: u32 = 1;

/// A step's cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }

    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.short())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Builds a key from named fields. Each field is written as a tag, a length and the bytes, so
/// no two different field sequences can encode to the same stream.
pub struct KeyBuilder {
    hasher: blake3::Hasher,
    /// Human-readable copy of the fields, kept for `--explain`.
    fields: Vec<(&'static str, String)>,
}

impl KeyBuilder {
    pub fn new(op: &'static str) -> KeyBuilder {
        let mut b = KeyBuilder { hasher: blake3::Hasher::new(), fields: Vec::new() };
        b.hasher.update(b"forge-cache-key");
        b.hasher.update(&KEY_VERSION.to_le_bytes());
        b.str("op", op);
        b
    }

    fn raw(&mut self, tag: &'static str, bytes: &[u8]) {
        self.hasher.update(&(tag.len() as u64).to_le_bytes());
        self.hasher.update(tag.as_bytes());
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    pub fn str(&mut self, tag: &'static str, value: &str) -> &mut Self {
        self.raw(tag, value.as_bytes());
        self.fields.push((tag, value.to_string()));
        self
    }

    pub fn opt(&mut self, tag: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(tag, v),
            None => {
                self.raw(tag, b"\xffnone");
                self.fields.push((tag, "<none>".into()));
                self
            }
        }
    }

    pub fn list(&mut self, tag: &'static str, values: &[String]) -> &mut Self {
        self.raw(tag, &(values.len() as u64).to_le_bytes());
        for v in values {
            self.raw(tag, v.as_bytes());
        }
        self.fields.push((tag, format!("{values:?}")));
        self
    }

    pub fn parent(&mut self, key: Option<&CacheKey>) -> &mut Self {
        match key {
            Some(k) => {
                self.raw("parent", &k.0);
                self.fields.push(("parent", k.short()));
            }
            None => {
                self.raw("parent", b"");
                self.fields.push(("parent", "<none>".into()));
            }
        }
        self
    }

    /// A field whose value is itself a digest (e.g. of the sources a COPY reads).
    pub fn digest(&mut self, tag: &'static str, digest: &[u8; 32]) -> &mut Self {
        self.raw(tag, digest);
        self.fields.push((tag, hex32(digest)[..12].to_string()));
        self
    }

    pub fn finish(self) -> (CacheKey, Vec<(&'static str, String)>) {
        (CacheKey(*self.hasher.finalize().as_bytes()), self.fields)
    }
}

pub fn hex32(d: &[u8; 32]) -> String {
    CacheKey(*d).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f: impl FnOnce(&mut KeyBuilder)) -> CacheKey {
        let mut b = KeyBuilder::new("test");
        f(&mut b);
        b.finish().0
    }

    #[test]
    fn field_boundaries_matter() {
        let a = key(|b| {
            b.str("x", "ab").str("y", "c");
        });
        let c = key(|b| {
            b.str("x", "a").str("y", "bc");
        });
        assert_ne!(a, c);
    }

    #[test]
    fn none_differs_from_empty() {
        assert_ne!(key(|b| { b.opt("x", None); }), key(|b| { b.opt("x", Some("")); }));
    }

    #[test]
    fn hex_is_lower_case_and_complete() {
        let mut raw = [0u8; 32];
        raw[0] = 0xab;
        raw[31] = 0x0f;
        let hex = CacheKey(raw).to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("ab00") && hex.ends_with("000f"), "{hex}");
    }

    #[test]
    fn stable_across_runs() {
        let a = key(|b| {
            b.str("cmd", "echo hi").list("env", &["A=1".into()]);
        });
        let b2 = key(|b| {
            b.str("cmd", "echo hi").list("env", &["A=1".into()]);
        });
        assert_eq!(a, b2);
        assert_eq!(a.to_hex().len(), 64);
    }
}
