//! The HTTP side: client options, URL building, HTTPS/HTTP choice, retries with backoff, and the
//! authentication state (challenges, cached tokens) each request goes through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use forge_oci::reference::Reference;

use crate::auth::{parse_challenges, Challenge, Credentials, Scopes, Token, TokenResponse};
use crate::credentials::{registry_host, DockerConfig};
use crate::error::{summarize_error_body, RegistryError};

/// Where the client finds credentials.
#[derive(Clone)]
pub enum CredentialSource {
    /// A docker `config.json`; `None` means the default location
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    DockerConfig(Option<PathBuf>),
    /// Fixed credentials per registry (`docker.io`, `localhost:5000`, …); others are anonymous.
    Fixed(HashMap<String, Credentials>),
    /// Never send credentials.
    Anonymous,
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::DockerConfig(p) => f.debug_tuple("DockerConfig").field(p).finish(),
            // Credentials' own Debug redacts secrets.
            CredentialSource::Fixed(m) => f.debug_tuple("Fixed").field(m).finish(),
            CredentialSource::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// Tunables of a [`Client`](crate::Client). `Default` suits the command line; tests shorten the
/// retry delays.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) reached over plain HTTP. Loopback registries always are.
    /// `FORGE_INSECURE_REGISTRIES` (comma-separated) adds to this list.
    pub insecure_registries: Vec<String>,
    pub credentials: CredentialSource,
    pub user_agent: String,
    /// Retries after the first attempt, for connection errors, resets, 5xx and 429.
    pub max_retries: u32,
    /// First backoff delay; doubles on each retry up to `retry_max_delay`.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub connect_timeout: Duration,
    /// Whole-request limit for requests with small bodies (manifests, tokens, upload steps).
    pub request_timeout: Duration,
    /// Longest wait for the next piece of a response (blob downloads have no total limit).
    pub idle_timeout: Duration,
    pub max_redirects: usize,
    pub max_concurrent_downloads: usize,
    pub max_concurrent_uploads: usize,
    /// Blobs up to this size are uploaded with one PUT; larger ones in PATCH chunks of this size.
    pub chunk_size: u64,
    /// Manifests and indexes larger than this are refused.
    pub max_manifest_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            credentials: CredentialSource::DockerConfig(None),
            user_agent: format!("forge/{}", env!("CARGO_PKG_VERSION")),
            max_retries: 5,
            retry_base_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            max_redirects: 10,
            max_concurrent_downloads: 4,
            max_concurrent_uploads: 3,
            chunk_size: 32 * 1024 * 1024,
            max_manifest_size: 4 * 1024 * 1024,
        }
    }
}

/// What is being done, for error messages.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    Manifest(&'a Reference),
    Blob(&'a Reference, &'a forge_oci::Digest),
    Push(&'a Reference),
    Registry(&'a str),
}

/// A request that can be sent again (retries, re-authentication): its body is in memory.
pub(crate) struct Req {
    pub method: Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Apply `request_timeout` to the whole exchange (false for streamed blob bodies).
    pub bounded: bool,
}

impl Req {
    pub fn new(method: Method, url: reqwest::Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            bounded: true,
        }
    }
    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
}

#[derive(Default)]
struct RegistryAuth {
    creds: Option<Credentials>,
    challenge: Option<Challenge>,
    tokens: HashMap<Scopes, Token>,
}

pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub opts: ClientOptions,
    insecure: Vec<String>,
    auth: Mutex<HashMap<String, RegistryAuth>>,
    token_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Transport {
    pub fn new(opts: ClientOptions) -> Result<Transport, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.idle_timeout)
            .redirect(reqwest::redirect::Policy::limited(opts.max_redirects))
            .build()
            .map_err(RegistryError::Client)?;
        let mut insecure: Vec<String> = opts
            .insecure_registries
            .iter()
            .map(|r| registry_host(r))
            .collect();
        if let Ok(env) = std::env::var("FORGE_INSECURE_REGISTRIES") {
            insecure.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(registry_host),
            );
        }
        Ok(Transport {
            http,
            opts,
            insecure,
            auth: Mutex::new(HashMap::new()),
            token_locks: Mutex::new(HashMap::new()),
        })
    }

    /// `http` for loopback and insecure registries, `https` otherwise.
    pub fn scheme(&self, registry: &str) -> &'static str {
        let host = registry_host(registry);
        if is_loopback(&host)
            || self
                .insecure
                .iter()
                .any(|i| *i == host || strip_port(i) == host)
        {
            "http"
        } else {
            "https"
        }
    }

    /// `<scheme>://<api host>/v2/<path>`.
    pub fn url(&self, r: &Reference, path: &str) -> Result<reqwest::Url, RegistryError> {
        self.registry_url(
            &r.registry,
            r.api_registry(),
            &format!("{}/{path}", r.repository),
        )
    }

    pub fn registry_url(
        &self,
        registry: &str,
        api_host: &str,
        path: &str,
    ) -> Result<reqwest::Url, RegistryError> {
        let s = format!("{}://{api_host}/v2/{path}", self.scheme(registry));
        reqwest::Url::parse(&s).map_err(|e| RegistryError::Protocol {
            url: s,
            reason: e.to_string(),
        })
    }

    /// The credentials for a registry, looked up once and then cached. The lookup may read the
    /// docker config and run a credential helper, so it runs on a blocking thread.
    async fn credentials(&self, registry: &str) -> Result<Credentials, RegistryError> {
        if let Some(c) = self
            .auth
            .lock()
            .expect("auth lock")
            .get(registry)
            .and_then(|a| a.creds.clone())
        {
            return Ok(c);
        }
        let source = self.opts.credentials.clone();
        let reg = registry.to_string();
        let creds = tokio::task::spawn_blocking(move || lookup_credentials(&source, &reg))
            .await
            .map_err(|e| {
                RegistryError::store("credential lookup task", std::io::Error::other(e))
            })??;
        self.auth
            .lock()
            .expect("auth lock")
            .entry(registry.to_string())
            .or_default()
            .creds = Some(creds.clone());
        Ok(creds)
    }

    /// Replaces the credentials used for a registry (after `login`) and forgets its tokens.
    pub fn set_credentials(&self, registry: &str, creds: Credentials) {
        let mut map = self.auth.lock().expect("auth lock");
        let entry = map.entry(registry.to_string()).or_default();
        entry.creds = Some(creds);
        entry.tokens.clear();
    }

    fn token_lock(&self, registry: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.token_locks
            .lock()
            .expect("token locks")
            .entry(registry.to_string())
            .or_default()
            .clone()
    }

    fn cached_token(&self, registry: &str, scopes: &Scopes) -> Option<Token> {
        let map = self.auth.lock().expect("auth lock");
        map.get(registry)?
            .tokens
            .get(scopes)
            .filter(|t| t.fresh(Duration::from_secs(10)))
            .cloned()
    }

    /// Drops the cached token for these scopes (it was rejected).
    pub fn forget_token(&self, registry: &str, scopes: &Scopes) {
        if let Some(a) = self.auth.lock().expect("auth lock").get_mut(registry) {
            a.tokens.remove(scopes);
        }
    }

    /// Forgets credentials, challenge and tokens of a registry (after logout or a failed login).
    pub fn forget_registry(&self, registry: &str) {
        self.auth.lock().expect("auth lock").remove(registry);
    }

    /// The `Authorization` header for a request to `registry` needing `scopes`, fetching a token
    /// when the registry asked for bearer authentication.
    pub(crate) async fn authorization(
        &self,
        registry: &str,
        scopes: &Scopes,
    ) -> Result<Option<String>, RegistryError> {
        let (challenge, cached) = {
            let map = self.auth.lock().expect("auth lock");
            match map.get(registry) {
                Some(a) => (
                    a.challenge.clone(),
                    a.tokens
                        .get(scopes)
                        .filter(|t| t.fresh(Duration::from_secs(10)))
                        .cloned(),
                ),
                None => (None, None),
            }
        };
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        match challenge.scheme.as_str() {
            "basic" => Ok(self.credentials(registry).await?.basic_header()),
            "bearer" => {
                if let Some(t) = cached {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let creds = self.credentials(registry).await?;
                if let Credentials::RegistryToken(t) = &creds {
                    return Ok(Some(format!("Bearer {t}")));
                }
                // One token request per registry at a time: parallel transfers that all need a
                // token wait for the first one and then find it cached.
                let lock = self.token_lock(registry);
                let _guard = lock.lock().await;
                if let Some(t) = self.cached_token(registry, scopes) {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self
                    .fetch_token(registry, &challenge, scopes, &creds)
                    .await?;
                let header = format!("Bearer {}", token.value);
                self.auth
                    .lock()
                    .expect("auth lock")
                    .entry(registry.to_string())
                    .or_default()
                    .tokens
                    .insert(scopes.clone(), token);
                Ok(Some(header))
            }
            _ => Ok(None),
        }
    }

    async fn fetch_token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scopes: &Scopes,
        creds: &Credentials,
    ) -> Result<Token, RegistryError> {
        let realm = challenge.param("realm").unwrap_or_default().to_string();
        let mut url = reqwest::Url::parse(&realm).map_err(|e| RegistryError::Protocol {
            url: realm.clone(),
            reason: format!("the bearer challenge's realm is not a URL: {e}"),
        })?;
        let service = challenge.param("service").unwrap_or_default().to_string();
        let resp = match creds {
            Credentials::IdentityToken { token, .. } => {
                // OAuth2 refresh-token grant, as Docker does for identity tokens.
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", token.clone()),
                    ("service", service.clone()),
                    ("client_id", "forge".to_string()),
                ];
                if !scopes.as_slice().is_empty() {
                    form.push(("scope", scopes.as_slice().join(" ")));
                }
                self.with_retries(&realm, || {
                    self.http
                        .post(url.clone())
                        .form(&form)
                        .timeout(self.opts.request_timeout)
                        .send()
                })
                .await?
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", &service);
                    }
                    for s in scopes.as_slice() {
                        q.append_pair("scope", s);
                    }
                    if let Credentials::Basic { username, .. } = creds {
                        q.append_pair("account", username);
                    }
                }
                let basic = creds.basic_header();
                self.with_retries(&realm, || {
                    let mut rb = self
                        .http
                        .get(url.clone())
                        .timeout(self.opts.request_timeout);
                    if let Some(b) = &basic {
                        rb = rb.header(AUTHORIZATION, b);
                    }
                    rb.send()
                })
                .await?
            }
        };
        let status = resp.status();
        let body = self.read_small(resp, &realm, 1024 * 1024).await?;
        if !status.is_success() {
            return Err(RegistryError::Token {
                realm,
                registry: registry.to_string(),
                status: status.as_u16(),
                detail: summarize_error_body(&body),
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                url: realm.clone(),
                reason: format!("unreadable token response: {e}"),
            })?;
        parsed.into_token().ok_or_else(|| RegistryError::Protocol {
            url: realm.clone(),
            reason: "the token response has no token".to_string(),
        })
    }

    /// Remembers what a 401 asked for. Returns true when a retry with (new) credentials can help.
    fn learn(
        &self,
        registry: &str,
        scopes: &Scopes,
        resp: &Response,
        sent_auth: bool,
        creds: &Credentials,
    ) -> bool {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let Some(ch) = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .cloned()
        else {
            return false;
        };
        let mut map = self.auth.lock().expect("auth lock");
        let entry = map.entry(registry.to_string()).or_default();
        if sent_auth {
            entry.tokens.remove(scopes);
        }
        // Basic credentials that were just refused will be refused again; a bearer token may
        // have expired or lacked a scope, so a fresh one is worth one more try.
        let helpful = match ch.scheme.as_str() {
            "bearer" => true,
            _ => creds.basic_header().is_some() && !sent_auth,
        };
        entry.challenge = Some(ch);
        helpful
    }

    /// Sends a replayable request with authentication, retrying transient failures and
    /// re-authenticating once on 401. Returns the final response whatever its status.
    pub async fn send(
        &self,
        registry: &str,
        scopes: &Scopes,
        req: &Req,
    ) -> Result<Response, RegistryError> {
        let mut reauthenticated = false;
        loop {
            let auth = self.authorization(registry, scopes).await?;
            let resp = self
                .with_retries(req.url.as_str(), || {
                    let mut rb = self
                        .http
                        .request(req.method.clone(), req.url.clone())
                        .headers(req.headers.clone());
                    if let Some(a) = &auth {
                        rb = rb.header(AUTHORIZATION, a);
                    }
                    if let Some(b) = &req.body {
                        rb = rb.body(b.clone());
                    }
                    if req.bounded {
                        rb = rb.timeout(self.opts.request_timeout);
                    }
                    rb.send()
                })
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !reauthenticated {
                let creds = self.credentials(registry).await?;
                if self.learn(registry, scopes, &resp, auth.is_some(), &creds) {
                    reauthenticated = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Sends a request built by `build` (called again for each attempt), retrying connection
    /// errors, 5xx and 429 with exponential backoff.
    pub async fn with_retries<F, Fut>(
        &self,
        url: &str,
        mut build: F,
    ) -> Result<Response, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Response, reqwest::Error>>,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let retry_left = attempt <= self.opts.max_retries;
            match build().await {
                Ok(resp) => {
                    let st = resp.status();
                    let transient = st.is_server_error() || st == StatusCode::TOO_MANY_REQUESTS;
                    if !(transient && retry_left) {
                        return Ok(resp);
                    }
                    let delay = retry_after(&resp).map(|d| d.min(self.opts.retry_max_delay));
                    drop(resp);
                    tokio::time::sleep(delay.unwrap_or_else(|| self.backoff(attempt))).await;
                }
                Err(e) if retry_left && is_transient(&e) => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(source) => {
                    return Err(RegistryError::Network {
                        url: url.to_string(),
                        attempts: attempt,
                        source,
                    });
                }
            }
        }
    }

    /// Exponential backoff with jitter: base·2^(attempt-1), at most `retry_max_delay`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .retry_base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.opts.retry_max_delay);
        // Up to 25% jitter so parallel transfers do not retry in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = capped.mul_f64(f64::from(nanos % 1000) / 4000.0);
        capped.saturating_sub(jitter)
    }

    /// Reads a small response body, refusing more than `limit` bytes.
    pub async fn read_small(
        &self,
        resp: Response,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(RegistryError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        let url = resp.url().to_string();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Network {
                url: url.clone(),
                attempts: 1,
                source,
            })?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(RegistryError::TooLarge {
                    what: what.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Turns an unexpected response into the error that explains it best.
    pub async fn status_error(&self, resp: Response, target: Target<'_>) -> RegistryError {
        let status = resp.status();
        let url = resp.url().to_string();
        let body = self
            .read_small(resp, "error body", 64 * 1024)
            .await
            .unwrap_or_default();
        let detail = summarize_error_body(&body);
        let (reference, registry) = match target {
            Target::Manifest(r) | Target::Blob(r, _) | Target::Push(r) => {
                (r.to_string(), r.registry.clone())
            }
            Target::Registry(reg) => (reg.to_string(), reg.to_string()),
        };
        match (status.as_u16(), target) {
            (401, _) => RegistryError::Unauthorized {
                reference,
                registry,
                detail,
            },
            (403, t) => RegistryError::Denied {
                reference,
                registry,
                action: if matches!(t, Target::Push(_)) {
                    "push to"
                } else {
                    "pull from"
                },
                detail,
            },
            (404, Target::Manifest(r)) => RegistryError::ManifestNotFound {
                reference,
                repository: r.name(),
                detail,
            },
            (404, Target::Blob(_, d)) => RegistryError::BlobNotFound {
                reference,
                digest: d.clone(),
                detail,
            },
            (code, _) => RegistryError::Status {
                url,
                status: code,
                detail,
            },
        }
    }
}

fn lookup_credentials(
    source: &CredentialSource,
    registry: &str,
) -> Result<Credentials, RegistryError> {
    Ok(match source {
        CredentialSource::Anonymous => Credentials::Anonymous,
        CredentialSource::Fixed(map) => {
            let host = registry_host(registry);
            map.iter()
                .find(|(k, _)| registry_host(k) == host)
                .map(|(_, c)| c.clone())
                .unwrap_or(Credentials::Anonymous)
        }
        CredentialSource::DockerConfig(path) => {
            let path = match path {
                Some(p) => p.clone(),
                None => DockerConfig::default_path()?,
            };
            DockerConfig::load(&path)?.credentials_for(registry)?
        }
    })
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Errors worth another attempt: connecting, timeouts, resets while sending or receiving.
fn is_transient(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect() || e.is_status() || e.is_decode())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// True for `localhost`, `*.localhost`, 127.0.0.0/8 and ::1 (with or without a port).
pub fn is_loopback(registry: &str) -> bool {
    let host = strip_port(registry);
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        let table = [
            ("localhost", true),
            ("localhost:5000", true),
            ("foo.localhost:1", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("[::1]", true),
            ("128.0.0.1:5000", false),
            ("docker.io", false),
            ("localhost.example.com", false),
            ("[::2]:80", false),
        ];
        for (r, want) in table {
            assert_eq!(is_loopback(r), want, "{r}");
        }
    }

    #[test]
    fn scheme_choice() {
        // The only test that sets this variable; other tests only gain an extra insecure host.
        std::env::set_var(
            "FORGE_INSECURE_REGISTRIES",
            " env-a.example:5000 ,env-b.example",
        );
        let t = Transport::new(ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into(), "http://plain.example/".into()],
            ..ClientOptions::default()
        })
        .unwrap();
        assert_eq!(t.scheme("localhost:5000"), "http");
        assert_eq!(t.scheme("127.0.0.1:1234"), "http");
        assert_eq!(t.scheme("reg.internal:5000"), "http");
        assert_eq!(t.scheme("reg.internal:5001"), "https");
        assert_eq!(t.scheme("plain.example"), "http");
        assert_eq!(t.scheme("docker.io"), "https");
        assert_eq!(t.scheme("env-a.example:5000"), "http");
        assert_eq!(t.scheme("env-b.example"), "http");
        assert_eq!(t.scheme("env-c.example"), "https");
        let r = Reference::parse("busybox:1").unwrap();
        assert_eq!(
            t.url(&r, "manifests/1").unwrap().as_str(),
            "https://registry-1.docker.io/v2/library/busybox/manifests/1"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let t = Transport::new(ClientOptions {
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_millis(1000),
            ..ClientOptions::default()
        })
        .unwrap();
        let d1 = t.backoff(1);
        let d3 = t.backoff(3);
        let d10 = t.backoff(10);
        assert!(
            d1 <= Duration::from_millis(100) && d1 >= Duration::from_millis(75),
            "{d1:?}"
        );
        assert!(
            d3 <= Duration::from_millis(400) && d3 >= Duration::from_millis(300),
            "{d3:?}"
        );
        assert!(
            d10 <= Duration::from_millis(1000) && d10 >= Duration::from_millis(750),
            "{d10:?}"
        );
    }
}
