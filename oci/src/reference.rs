//! Image references: `[registry/]repository[:tag][@digest]`, parsed and normalized the way
//! Docker does it.
//!
//! ```
//! use forge_oci::reference::Reference;
//!
//! let r = Reference::parse("busybox").unwrap();
//! assert_eq!(r.registry, "docker.io");
//! assert_eq!(r.repository, "library/busybox");
//! assert_eq!(r.tag, None);
//! assert_eq!(r.tag_or_latest(), "latest");
//! assert_eq!(r.with_default_tag().to_string(), "docker.io/library/busybox:latest");
//! assert_eq!(r.with_default_tag().familiar(), "busybox:latest");
//! assert_eq!(r.api_registry(), "registry-1.docker.io");
//!
//! let r = Reference::parse("localhost:5000/team/app:v1").unwrap();
//! assert_eq!((r.registry.as_str(), r.repository.as_str()), ("localhost:5000", "team/app"));
//! assert_eq!(r.tag.as_deref(), Some("v1"));
//! ```
//!
//! Normalization rules (from Docker's `reference` package):
//! - The part before the first `/` is a registry when it contains a `.` or a `:`, is
//!   `localhost`, or has upper-case letters; otherwise the whole name is a Docker Hub repository.
//! - `index.docker.io` is an old spelling of `docker.io`.
//! - A one-component Docker Hub repository lives under `library/`.
//! - Repository components are lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
//! - Tags match `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; forge accepts only `sha256` digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Digest;

/// The registry of unqualified names.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves the Docker Hub registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host with an optional port, e.g. `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {kind}")]
pub struct ReferenceError {
    pub input: String,
    pub kind: ReferenceErrorKind,
}

/// The specific problem found in a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceErrorKind {
    #[error("the reference is empty")]
    Empty,
    #[error("the repository name must be lower-case")]
    Uppercase,
    #[error("the repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("a 64-character hexadecimal string is an image ID, not a reference")]
    LooksLikeId,
    #[error("invalid registry host {0:?} (expected host[:port])")]
    InvalidRegistry(String),
    #[error("invalid repository path component {0:?} (use lower-case letters, digits, and . _ - separators)")]
    InvalidComponent(String),
    #[error("invalid tag {0:?} (at most 128 of A-Z a-z 0-9 _ . -, not starting with . or -)")]
    InvalidTag(String),
    #[error("invalid digest {0:?} (expected sha256:<64 lower-case hex characters>)")]
    InvalidDigest(String),
    #[error("unsupported digest algorithm {0:?} (forge handles sha256 only)")]
    UnsupportedDigest(String),
}

impl Reference {
    /// Parses and normalizes a reference such as `busybox`, `ghcr.io/o/r:tag`,
    /// `localhost:5000/app@sha256:…` or `index.docker.io/library/alpine:3`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |kind| ReferenceError {
            input: input.to_string(),
            kind,
        };
        if input.is_empty() {
            return Err(err(ReferenceErrorKind::Empty));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d).map_err(err)?)),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[after_slash..].rfind(':') {
            Some(i) => {
                let i = after_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            validate_tag(t).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err(ReferenceErrorKind::Empty));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err(ReferenceErrorKind::NameTooLong));
        }
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(ReferenceErrorKind::LooksLikeId));
        }

        let (registry, path) = split_registry(name);
        validate_registry(registry).map_err(err)?;
        validate_path(path).map_err(err)?;

        let registry = if registry == LEGACY_DOCKER_HUB {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form people type: `busybox:latest`, `user/app:v1`, `ghcr.io/o/r@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.push_suffix(&mut s);
        s
    }

    /// The host to talk to for the registry API: `registry-1.docker.io` for Docker Hub, the
    /// registry itself otherwise.
    pub fn api_registry(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The same repository with another tag (the digest, if any, is kept, as Docker does).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(tag).map_err(|kind| ReferenceError {
            input: format!("{}:{tag}", self.name()),
            kind,
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag, if any, is kept).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository with neither tag nor digest.
    pub fn without_tag_or_digest(&self) -> Reference {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }

    /// Adds the `latest` tag when the reference has neither a tag nor a digest.
    pub fn with_default_tag(&self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            Reference {
                tag: Some("latest".to_string()),
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }

    /// The tag, or `latest` when there is none.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What to ask the registry for: the digest when pinned, else the tag (or `latest`).
    pub fn manifest_reference(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag_or_latest().to_string(),
        }
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

/// Splits off the registry the way Docker's `splitDockerDomain` does.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn parse_digest(d: &str) -> Result<Digest, ReferenceErrorKind> {
    match d.split_once(':') {
        Some(("sha256", _)) => d
            .parse()
            .map_err(|_| ReferenceErrorKind::InvalidDigest(d.to_string())),
        Some((alg, hex))
            if !alg.is_empty()
                && !hex.is_empty()
                && alg.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                }) =>
        {
            Err(ReferenceErrorKind::UnsupportedDigest(alg.to_string()))
        }
        _ => Err(ReferenceErrorKind::InvalidDigest(d.to_string())),
    }
}

fn validate_tag(t: &str) -> Result<(), ReferenceErrorKind> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !t.is_empty()
        && t.len() <= MAX_TAG_LEN
        && word(t.as_bytes()[0])
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceErrorKind::InvalidTag(t.to_string()))
    }
}

fn validate_registry(r: &str) -> Result<(), ReferenceErrorKind> {
    let bad = || ReferenceErrorKind::InvalidRegistry(r.to_string());
    let (host, port) = if let Some(v6) = r.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), ReferenceErrorKind> {
    for component in path.split('/') {
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceErrorKind::Uppercase);
        }
        if !component_ok(component) {
            return Err(ReferenceErrorKind::InvalidComponent(component.to_string()));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// input → (fully qualified Display, familiar, api registry)
    #[test]
    fn parses_and_normalizes() {
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox",
                "busybox",
                "registry-1.docker.io",
            ),
            (
                "busybox:latest",
                "docker.io/library/busybox:latest",
                "busybox:latest",
                "registry-1.docker.io",
            ),
            (
                "library/busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
                "registry-1.docker.io",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox",
                "busybox",
                "registry-1.docker.io",
            ),
            (
                "index.docker.io/busybox:x",
                "docker.io/library/busybox:x",
                "busybox:x",
                "registry-1.docker.io",
            ),
            (
                "index.docker.io/user/app",
                "docker.io/user/app",
                "user/app",
                "registry-1.docker.io",
            ),
            (
                "user/app:v1.2_3-x",
                "docker.io/user/app:v1.2_3-x",
                "user/app:v1.2_3-x",
                "registry-1.docker.io",
            ),
            (
                "docker.io/library/foo/bar",
                "docker.io/library/foo/bar",
                "library/foo/bar",
                "registry-1.docker.io",
            ),
            (
                "localhost/app",
                "localhost/app",
                "localhost/app",
                "localhost",
            ),
            (
                "localhost:5000/app:1",
                "localhost:5000/app:1",
                "localhost:5000/app:1",
                "localhost:5000",
            ),
            (
                "127.0.0.1:5000/a/b/c",
                "127.0.0.1:5000/a/b/c",
                "127.0.0.1:5000/a/b/c",
                "127.0.0.1:5000",
            ),
            (
                "[::1]:5000/app",
                "[::1]:5000/app",
                "[::1]:5000/app",
                "[::1]:5000",
            ),
            (
                "ghcr.io/o/r:tag",
                "ghcr.io/o/r:tag",
                "ghcr.io/o/r:tag",
                "ghcr.io",
            ),
            ("Registry/app", "Registry/app", "Registry/app", "Registry"),
            (
                "my-reg:80/a__b.c--d_e",
                "my-reg:80/a__b.c--d_e",
                "my-reg:80/a__b.c--d_e",
                "my-reg:80",
            ),
            (
                "localhost",
                "docker.io/library/localhost",
                "localhost",
                "registry-1.docker.io",
            ),
        ];
        for (input, full, familiar, api) in table {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *full, "display of {input}");
            assert_eq!(r.familiar(), *familiar, "familiar of {input}");
            assert_eq!(r.api_registry(), *api, "api registry of {input}");
            assert_eq!(
                Reference::parse(&r.to_string()).unwrap(),
                r,
                "round trip of {input}"
            );
        }
    }

    #[test]
    fn digests_and_tags() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(r.familiar(), format!("busybox@{D}"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(
            r.with_default_tag(),
            r,
            "a digest reference gets no default tag"
        );

        let r = Reference::parse(&format!("localhost:5000/app:v2@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.to_string(), format!("localhost:5000/app:v2@{D}"));

        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.tag_or_latest(), "latest");
        assert_eq!(r.manifest_reference(), "latest");
        let t = r.with_tag("3.20").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/alpine:3.20");
        assert!(r.with_tag("-bad").is_err());
        assert_eq!(
            t.without_tag_or_digest().to_string(),
            "docker.io/library/alpine"
        );
        assert_eq!(t.name(), "docker.io/library/alpine");
    }

    #[test]
    fn rejects_bad_references() {
        use ReferenceErrorKind as K;
        let long = "a".repeat(256);
        let long_tag = format!("app:{}", "t".repeat(129));
        let id = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let table: &[(&str, K)] = &[
            ("", K::Empty),
            (":tag", K::Empty),
            ("Busybox", K::Uppercase),
            ("docker.io/User/app", K::Uppercase),
            (&long, K::NameTooLong),
            (id, K::LooksLikeId),
            ("app:", K::InvalidTag(String::new())),
            ("app:-x", K::InvalidTag("-x".into())),
            ("app:a/b", K::InvalidRegistry("app:a".into())),
            (&long_tag, K::InvalidTag("t".repeat(129))),
            ("app@sha256:abc", K::InvalidDigest("sha256:abc".into())),
            ("app@sha512:abcd", K::UnsupportedDigest("sha512".into())),
            ("app@latest", K::InvalidDigest("latest".into())),
            ("a..b", K::InvalidComponent("a..b".into())),
            ("a/_b", K::InvalidComponent("_b".into())),
            ("a/b-", K::InvalidComponent("b-".into())),
            ("a//b", K::InvalidComponent(String::new())),
            ("reg:port/app", K::InvalidRegistry("reg:port".into())),
            ("reg:99999/app", K::InvalidRegistry("reg:99999".into())),
            ("-reg.io/app", K::InvalidRegistry("-reg.io".into())),
            ("[::1/app", K::InvalidRegistry("[::1".into())),
            ("with space", K::InvalidComponent("with space".into())),
        ];
        for (input, kind) in table {
            match Reference::parse(input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert_eq!(&e.kind, kind, "error for {input:?}: {e}"),
            }
        }
        let msg = Reference::parse("Busybox").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid image reference \"Busybox\": the repository name must be lower-case"
        );
    }

    #[test]
    fn serde_as_string() {
        let r = Reference::parse("busybox:1").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/library/busybox:1\"");
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Reference>("\"UPPER\"").is_err());
    }
}
