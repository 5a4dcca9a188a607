//! Registry authentication: credentials, `WWW-Authenticate` challenges, and bearer tokens.
//!
//! The dance (Docker's token protocol): a request without a token gets `401` with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`. The client asks the realm for a
//! token covering the scopes it needs (`repository:<name>:pull`, `…:pull,push`), sending Basic
//! credentials when it has them (or an OAuth2 refresh token for identity tokens), and repeats the
//! request with `Authorization: Bearer <token>`. Registries with a `Basic` challenge take the
//! credentials on every request instead.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Credentials for one registry. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    /// A user name and a password (or a personal access token used as one).
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in the docker config), exchanged at the token
    /// realm for access tokens.
    IdentityToken {
        username: String,
        token: String,
    },
    /// A ready bearer token (`registrytoken` in the docker config), sent as is.
    RegistryToken(String),
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credentials::Anonymous)
    }

    /// The `Authorization` header value for Basic authentication, when there is a password.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::IdentityToken { username, .. } => {
                write!(
                    f,
                    "IdentityToken {{ username: {username:?}, token: <redacted> }}"
                )
            }
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased scheme: `bearer`, `basic`, …
    pub scheme: String,
    /// Parameters with lower-cased names (`realm`, `service`, `scope`, `error`).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses the value of one `WWW-Authenticate` header, which may hold several challenges:
/// `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull", Basic realm="x"`.
/// Malformed parts are skipped rather than failing the whole header.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut lx = Lexer {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        lx.skip_ws_and_commas();
        let Some(word) = lx.token() else {
            if lx.i >= lx.s.len() {
                break;
            }
            lx.i += 1; // an unexpected character: skip it
            continue;
        };
        lx.skip_ws();
        if lx.peek() == Some(b'=') && !out.is_empty() {
            // `name=value` belongs to the current challenge
            lx.i += 1;
            lx.skip_ws();
            let value = if lx.peek() == Some(b'"') {
                lx.quoted()
            } else {
                lx.token().unwrap_or_default()
            };
            out.last_mut()
                .expect("checked non-empty")
                .params
                .insert(word.to_ascii_lowercase(), value);
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b);
            if !tchar {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut v = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        v.push(n);
                        self.i += 1;
                    }
                }
                _ => v.push(b),
            }
        }
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// The scopes one request needs, e.g. `repository:library/busybox:pull`. Kept sorted so that
/// the same set always hits the same cached token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub fn none() -> Scopes {
        Scopes(Vec::new())
    }
    pub fn pull(repository: &str) -> Scopes {
        Scopes(vec![format!("repository:{repository}:pull")])
    }
    pub fn push(repository: &str) -> Scopes {
        Scopes(vec![format!("repository:{repository}:pull,push")])
    }
    /// Adds another scope (for cross-repository mounts: the source's `pull`).
    pub fn and(mut self, scope: String) -> Scopes {
        if !self.0.contains(&scope) {
            self.0.push(scope);
            self.0.sort();
        }
        self
    }
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A bearer token with its expiry. `Debug` never shows the token.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl Token {
    /// True while the token has at least `margin` left.
    pub fn fresh(&self, margin: Duration) -> bool {
        Instant::now() + margin < self.expires
    }
}

/// The JSON a token realm answers with.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token (`token`, or OAuth2's `access_token`) and its lifetime; the protocol's default
    /// lifetime is 60 seconds.
    pub fn into_token(self) -> Option<Token> {
        let value = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let secs = self
            .expires_in
            .filter(|&s| s > 0)
            .unwrap_or(60)
            .min(24 * 3600);
        Some(Token {
            value,
            expires: Instant::now() + Duration::from_secs(secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn challenges() {
        let table: &[(&str, Vec<Challenge>)] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
                vec![ch(
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/busybox:pull"),
                    ],
                )],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![ch("basic", &[("realm", "Registry Realm")])],
            ),
            (
                r#"Bearer realm="http://127.0.0.1:1/t", error="insufficient_scope" , Basic realm=x"#,
                vec![
                    ch(
                        "bearer",
                        &[
                            ("realm", "http://127.0.0.1:1/t"),
                            ("error", "insufficient_scope"),
                        ],
                    ),
                    ch("basic", &[("realm", "x")]),
                ],
            ),
            (
                r#"BEARER Realm="a\"b""#,
                vec![ch("bearer", &[("realm", "a\"b")])],
            ),
            ("Basic", vec![ch("basic", &[])]),
            ("", vec![]),
            (
                r#"Bearer realm="unterminated"#,
                vec![ch("bearer", &[("realm", "unterminated")])],
            ),
        ];
        for (header, want) in table {
            assert_eq!(&parse_challenges(header), want, "header {header:?}");
        }
    }

    #[test]
    fn secrets_never_in_debug() {
        let all = [
            Credentials::basic("alice", "hunter2"),
            Credentials::IdentityToken {
                username: "alice".into(),
                token: "hunter2".into(),
            },
            Credentials::RegistryToken("hunter2".into()),
        ];
        for c in all {
            let shown = format!("{c:?} {c:#?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        let t = Token {
            value: "hunter2".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn token_responses() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.fresh(Duration::from_secs(200)) && !t.fresh(Duration::from_secs(400)));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value, "x");
        assert!(t.fresh(Duration::from_secs(50)) && !t.fresh(Duration::from_secs(70)));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(t.into_token().is_none());
    }

    #[test]
    fn scopes_are_a_sorted_set() {
        let a = Scopes::push("b")
            .and("repository:a:pull".into())
            .and("repository:a:pull".into());
        assert_eq!(
            a.as_slice(),
            ["repository:a:pull", "repository:b:pull,push"]
        );
    }
}
