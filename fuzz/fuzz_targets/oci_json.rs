//! The manifest, index and image-config parsers (and the small string grammars they carry:
//! digests, platforms, references) must never panic, and whatever parses must serialize and
//! parse again to the same value.
#![no_main]

use forge_oci::{Digest, ImageConfig, Index, Manifest, Platform, Reference};
use libfuzzer_sys::fuzz_target;

fn roundtrip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let bytes = serde_json::to_vec(&v).expect("a parsed value serializes");
        let again: T = serde_json::from_slice(&bytes).expect("serialized output parses again");
        assert_eq!(v, again);
    }
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<Manifest>(data);
    roundtrip::<Index>(data);
    roundtrip::<ImageConfig>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Digest>();
        let _ = Platform::parse(s);
        if let Ok(r) = Reference::parse(s) {
            let _ = Reference::parse(&r.to_string());
        }
    }
});
