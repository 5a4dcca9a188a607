//! The errors of the registry client. Each variant names what was being fetched or pushed and,
//! where a person can do something about it, says what to try.

use std::path::PathBuf;

use forge_oci::reference::ReferenceError;
use forge_oci::Digest;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// 401: no credentials, or the registry rejected them.
    #[error("authentication required for {reference}{}: run `forge login {registry}` (or check the credentials stored for it); a repository that does not exist is refused the same way, so check the name too", paren(.detail))]
    Unauthorized {
        reference: String,
        registry: String,
        detail: String,
    },

    /// 403: the credentials are valid but may not do this.
    #[error("access to {reference} denied{}: check that the repository exists and that your account may {action} it (`forge login {registry}` to use another account)", paren(.detail))]
    Denied {
        reference: String,
        registry: String,
        action: &'static str,
        detail: String,
    },

    /// 404 on a manifest.
    #[error("manifest for {reference} not found{}: check that the repository and tag exist (for example with `skopeo list-tags docker://{repository}`)", paren(.detail))]
    ManifestNotFound {
        reference: String,
        repository: String,
        detail: String,
    },

    /// 404 on a blob the manifest names.
    #[error("blob {digest} of {reference} not found in the registry{}: the image may be incomplete or was deleted while pulling", paren(.detail))]
    BlobNotFound {
        reference: String,
        digest: Digest,
        detail: String,
    },

    /// The index has no manifest for the requested platform.
    #[error("{reference} has no image for platform {wanted} (available: {}); pick one with --platform", list(.available))]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },

    #[error("{reference}: unsupported media type {media_type:?}{}", paren(.context))]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
        context: String,
    },

    #[error("{reference}: invalid manifest or index: {reason}")]
    InvalidManifest { reference: String, reason: String },

    #[error("{what}: content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{what}: expected {expected} bytes, the registry sent {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// The registry sent more than the descriptor's size (or the manifest size limit); the
    /// download was cut off there.
    #[error("{what}: the registry sent more than the expected {limit} bytes; download stopped")]
    TooLarge { what: String, limit: u64 },

    /// An HTTP status that the operation does not expect.
    #[error("{url}: unexpected HTTP status {status}{}", paren(.detail))]
    Status {
        url: String,
        status: u16,
        detail: String,
    },

    /// Connection failures, resets and timeouts, after retrying.
    #[error("{url}: network error after {attempts} attempt(s): {source}")]
    Network {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },

    /// The registry answered something the protocol does not allow.
    #[error("{url}: protocol error: {reason}")]
    Protocol { url: String, reason: String },

    /// The token service refused or failed.
    #[error("token request to {realm} for {registry} failed with HTTP {status}{}{}", paren(.detail), hint(.status, .registry))]
    Token {
        realm: String,
        registry: String,
        status: u16,
        detail: String,
    },

    #[error(transparent)]
    Credentials(#[from] CredentialsError),

    /// The local blob store failed.
    #[error("local store: {what}: {source}")]
    Store {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The HTTP client could not be built (bad TLS setup and the like).
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Reading, writing or asking for stored registry credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: the `auth` entry for {registry} is not base64 of user:password")]
    BadAuthEntry { path: PathBuf, registry: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper {program} is not installed (configured for {registry}); install it or remove it from the docker config")]
    HelperMissing { program: String, registry: String },
    #[error("credential helper {program} failed for {registry}: {reason}")]
    Helper {
        program: String,
        registry: String,
        reason: String,
    },
    #[error("no home directory to find the docker config in; set DOCKER_CONFIG")]
    NoHome,
}

fn paren(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn hint(status: &u16, registry: &str) -> String {
    match status {
        401 | 403 => format!("; run `forge login {registry}` or check the stored credentials"),
        _ => String::new(),
    }
}

impl RegistryError {
    /// True for failures caused by what the user asked for (bad reference, missing tag, no
    /// access), as opposed to network or registry trouble.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RegistryError::Reference(_)
                | RegistryError::Unauthorized { .. }
                | RegistryError::Denied { .. }
                | RegistryError::ManifestNotFound { .. }
                | RegistryError::NoMatchingPlatform { .. }
                | RegistryError::Credentials(_)
        )
    }

    pub(crate) fn store(what: impl Into<String>, source: std::io::Error) -> RegistryError {
        RegistryError::Store {
            what: what.into(),
            source,
        }
    }
}

/// The registry's JSON error body: `{"errors":[{"code":…,"message":…}]}`, flattened into one
/// line for error messages. Falls back to a short prefix of a non-JSON body.
pub(crate) fn summarize_error_body(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        if !b.errors.is_empty() {
            return b
                .errors
                .iter()
                .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut s: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summarized() {
        let b =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            summarize_error_body(b),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(summarize_error_body(b"  plain\ntext "), "plaintext");
        assert_eq!(summarize_error_body(b""), "");
        let long = "x".repeat(500);
        assert_eq!(summarize_error_body(long.as_bytes()).chars().count(), 201);
    }

    #[test]
    fn messages_say_what_to_try() {
        let e = RegistryError::Unauthorized {
            reference: "localhost:5000/app:1".into(),
            registry: "localhost:5000".into(),
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "authentication required for localhost:5000/app:1: run `forge login localhost:5000` \
             (or check the credentials stored for it); a repository that does not exist is \
             refused the same way, so check the name too"
        );
        let e = RegistryError::ManifestNotFound {
            reference: "docker.io/library/busybox:nope".into(),
            repository: "docker.io/library/busybox".into(),
            detail: "MANIFEST_UNKNOWN: manifest unknown".into(),
        };
        assert!(
            e.to_string()
                .contains("check that the repository and tag exist"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("(MANIFEST_UNKNOWN: manifest unknown)"),
            "{e}"
        );
        assert!(e.is_user_error());
    }
}
