//! Test harness: real `docker-registry` instances (plain, htpasswd, token auth), a token
//! server, a fault-injecting proxy, and helpers that build small images in a store.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use forge_cache::Store;
use forge_oci::{media, Descriptor, Digest, ImageConfig, Manifest, Platform};
use forge_registry::{ClientOptions, CredentialSource};

// ------------------------------------------------------------------ tools

/// Returns the tool's path, or None after a loud skip message; panics under CI=true.
pub fn require_tool(name: &str, path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{name} not found at {path}, and CI=true requires it");
    }
    eprintln!("SKIPPED: {name} not found at {path}");
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Client options for tests: short retry delays, credentials only from `creds`.
pub fn test_options(creds: CredentialSource) -> ClientOptions {
    ClientOptions {
        credentials: creds,
        max_retries: 4,
        retry_base_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(60),
        ..ClientOptions::default()
    }
}

// ------------------------------------------------------------------ registry

pub enum RegistryAuth {
    None,
    Htpasswd { user: String, password: String },
    Token(Arc<TokenServer>),
}

/// A `docker-registry` process with its own config and storage; killed on drop.
pub struct TestRegistry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    _token: Option<Arc<TokenServer>>,
}

impl TestRegistry {
    /// Starts a registry, or returns None (after a SKIPPED line) when the binary is missing.
    pub fn start(auth: RegistryAuth) -> Option<TestRegistry> {
        let bin = require_tool("docker-registry", "/usr/bin/docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth_yaml = match &auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd { user, password } => {
                let htpasswd = require_tool("htpasswd (apache2-utils)", "/usr/bin/htpasswd")?;
                let out = Command::new(htpasswd)
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: forge-test\n    path: {}\n",
                    path.display()
                )
            }
            RegistryAuth::Token(ts) => {
                let path = dir.path().join("token-root.pem");
                std::fs::write(&path, &ts.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    ts.port,
                    TokenServer::SERVICE,
                    TokenServer::ISSUER,
                    path.display()
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: forge-test-secret\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let token = match auth {
            RegistryAuth::Token(ts) => Some(ts),
            _ => None,
        };
        let mut reg = TestRegistry {
            child,
            port,
            dir,
            _token: token,
        };
        reg.wait_ready();
        Some(reg)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not answer on port {} within 20s: {}",
            self.port,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn reference(&self, repo_tag: &str) -> forge_oci::Reference {
        forge_oci::Reference::parse(&format!("{}/{repo_tag}", self.host())).unwrap()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ token server

/// A token service for `auth: token`: checks Basic credentials and issues ES256 JWTs, signed with
/// a key pair generated for this test and carried in the `x5c` header (the registry trusts the
/// matching self-signed certificate through `rootcertbundle`).
pub struct TokenServer {
    pub port: u16,
    pub cert_pem: String,
    /// Every token request: `account|scope scope …|granted` (never the password).
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    pub const SERVICE: &'static str = "forge-test-registry";
    pub const ISSUER: &'static str = "forge-test-issuer";
    /// The refresh token (docker config `identitytoken`) the server accepts.
    pub const REFRESH_TOKEN: &'static str = "forge-refresh-token";

    /// `user`/`password` get every action they ask for; anonymous requests get `pull` on
    /// repositories under `public/` only.
    pub fn start(user: &str, password: &str) -> Arc<TokenServer> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["forge-token-signer".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_der = cert.der().to_vec();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let expected_auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (reqs, stop2) = (requests.clone(), stop.clone());
        let x5c = base64::engine::general_purpose::STANDARD.encode(&cert_der);
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = serve_token(s, &expected_auth, &signer, &rng, &x5c, &reqs);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Arc::new(TokenServer {
            port,
            cert_pem: cert.pem(),
            requests,
            stop,
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_token(
    s: TcpStream,
    expected_auth: &str,
    signer: &ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
    x5c: &str,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut authorized = false;
    let mut has_auth = false;
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                has_auth = true;
                authorized = value.trim() == expected_auth;
            }
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
    let mut scopes = Vec::new();
    let mut account = String::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "scope" => scopes.push(v.into_owned()),
            "account" => account = v.into_owned(),
            _ => {}
        }
    }
    if line.starts_with("POST ") {
        // OAuth2 refresh-token grant (identity tokens): form fields in the body.
        let mut body = vec![0u8; content_length.min(64 * 1024)];
        reader.read_exact(&mut body)?;
        let form =
            reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(&body))).unwrap();
        let field = |name: &str| {
            form.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        has_auth = true;
        authorized = field("grant_type").as_deref() == Some("refresh_token")
            && field("refresh_token").as_deref() == Some(TokenServer::REFRESH_TOKEN);
        account = format!("refresh:{}", field("client_id").unwrap_or_default());
        scopes = field("scope")
            .map(|s| s.split(' ').map(str::to_string).collect())
            .unwrap_or_default();
    }
    let mut out = s;
    if has_auth && !authorized {
        log.lock()
            .unwrap()
            .push(format!("{account}|{}|rejected", scopes.join(" ")));
        return out.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 55\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad pw\"}]}");
    }
    let mut access = Vec::new();
    for scope in &scopes {
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.len() != 3 || parts[0] != "repository" {
            continue;
        }
        let actions: Vec<&str> = parts[2].split(',').collect();
        let granted: Vec<&str> = if authorized {
            actions
        } else if parts[1].starts_with("public/") {
            actions.into_iter().filter(|a| *a == "pull").collect()
        } else {
            Vec::new()
        };
        access.push(
            serde_json::json!({ "type": "repository", "name": parts[1], "actions": granted }),
        );
    }
    log.lock().unwrap().push(format!(
        "{account}|{}|{}",
        scopes.join(" "),
        if authorized { "user" } else { "anonymous" }
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": TokenServer::ISSUER,
        "sub": account,
        "aud": TokenServer::SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = signer.sign(rng, signing_input.as_bytes()).unwrap();
    let jwt = format!("{signing_input}.{}", b64(sig.as_ref()));
    let body = serde_json::json!({ "token": jwt, "expires_in": 300 }).to_string();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

// ------------------------------------------------------------------ fault proxy

/// What the proxy does to one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Close the connection without answering.
    Reset,
    /// Answer with this status and an empty body.
    Status(u16),
    /// Forward, but pass only this many body bytes of the response, then close.
    Truncate(usize),
    /// Forward the whole response, a few KiB at a time with pauses.
    Slow { piece: usize, pause: Duration },
    /// Forward, flipping the body byte at this offset.
    Corrupt(usize),
    /// Answer 200 with a body that never ends (until the client hangs up or 64 MiB).
    Endless,
    /// Send the headers and this many body bytes, then stop sending (for up to 60 s).
    Stall(usize),
    /// Answer `307` pointing at the same path on another port of 127.0.0.1.
    Redirect(u16),
    /// Forward unchanged (to let earlier matching requests through).
    Pass,
}

/// A TCP proxy in front of a registry that applies scripted faults: each rule
/// `(path substring, fault)` applies once, to the next request whose request line contains the
/// substring. Requests without a matching rule pass through. Each connection carries one
/// request (`Connection: close` is forced), so faults land on the request they were meant for.
pub struct FaultProxy {
    pub port: u16,
    rules: Arc<Mutex<VecDeque<(String, Fault)>>>,
    /// Request lines seen, in order, with the fault applied.
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream: u16, rules: Vec<(&str, Fault)>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules = Arc::new(Mutex::new(
            rules
                .into_iter()
                .map(|(p, f)| (p.to_string(), f))
                .collect::<VecDeque<_>>(),
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r2, s2, st2, c2) = (
            rules.clone(),
            seen.clone(),
            stop.clone(),
            connections.clone(),
        );
        std::thread::spawn(move || {
            while !st2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        c2.fetch_add(1, Ordering::Relaxed);
                        let (r, s, st) = (r2.clone(), s2.clone(), st2.clone());
                        std::thread::spawn(move || {
                            let _ = proxy_one(client, upstream, &r, &s, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy {
            port,
            rules,
            seen,
            stop,
            connections,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn remaining_rules(&self) -> usize {
        self.rules.lock().unwrap().len()
    }

    pub fn add_rule(&self, path: &str, fault: Fault) {
        self.rules
            .lock()
            .unwrap()
            .push_back((path.to_string(), fault));
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if l == "\r\n" || l == "\n" {
            return Ok(lines);
        }
        lines.push(l.trim_end().to_string());
    }
}

fn proxy_one(
    client: TcpStream,
    upstream: u16,
    rules: &Mutex<VecDeque<(String, Fault)>>,
    seen: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut creader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut creader)?;
    let request_line = head.first().cloned().unwrap_or_default();
    let fault = {
        let mut rules = rules.lock().unwrap();
        let pos = rules
            .iter()
            .position(|(p, _)| request_line.contains(p.as_str()));
        pos.and_then(|i| rules.remove(i)).map(|(_, f)| f)
    };
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut range = String::new();
    for name in ["range", "content-range"] {
        if let Some(v) = header(name) {
            range.push_str(&format!(" [{name} {v}]"));
        }
    }
    seen.lock()
        .unwrap()
        .push(format!("{request_line}{range} => {fault:?}"));
    let mut out = client;
    match &fault {
        Some(Fault::Reset) => return Ok(()),
        Some(Fault::Status(code)) => {
            return write!(
                out,
                "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(Fault::Redirect(port)) => {
            let path = request_line.split_whitespace().nth(1).unwrap_or("/");
            return write!(
                out,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(Fault::Endless) => {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")?;
            let zeros = vec![0u8; 64 * 1024];
            for _ in 0..1024 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                out.write_all(&zeros)?; // fails once the client hangs up
            }
            return Ok(());
        }
        _ => {}
    }
    // Forward the request with Connection: close, then its body (Content-Length bytes).
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut content_length = 0usize;
    let mut req = String::new();
    req.push_str(&request_line);
    req.push_str("\r\n");
    for h in head.iter().skip(1) {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    std::io::copy(&mut (&mut creader).take(content_length as u64), &mut up)?;

    let mut ureader = BufReader::new(up);
    let resp_head = read_head(&mut ureader)?;
    let mut head_bytes = String::new();
    for h in &resp_head {
        head_bytes.push_str(h);
        head_bytes.push_str("\r\n");
    }
    head_bytes.push_str("\r\n");
    out.write_all(head_bytes.as_bytes())?;
    let mut body_pos = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let want = match &fault {
            Some(Fault::Slow { piece, .. }) => (*piece).min(buf.len()),
            _ => buf.len(),
        };
        let n = ureader.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        match &fault {
            Some(Fault::Truncate(limit)) | Some(Fault::Stall(limit)) if body_pos + n >= *limit => {
                let keep = limit - body_pos;
                out.write_all(&chunk[..keep])?;
                out.flush()?;
                if matches!(fault, Some(Fault::Stall(_))) {
                    // Keep the connection open without sending until the client hangs up
                    // (at most 60 s).
                    out.set_read_timeout(Some(Duration::from_millis(100)))?;
                    let until = Instant::now() + Duration::from_secs(60);
                    let mut probe = [0u8; 64];
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        match out.read(&mut probe) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                }
                return Ok(());
            }
            Some(Fault::Corrupt(at)) if *at >= body_pos && *at < body_pos + n => {
                chunk[at - body_pos] ^= 0xff;
            }
            Some(Fault::Slow { pause, .. }) => std::thread::sleep(*pause),
            _ => {}
        }
        out.write_all(chunk)?;
        body_pos += n;
    }
    Ok(())
}

// ------------------------------------------------------------------ images

/// A small gzip layer tar with the given files (path, content, mode).
pub fn make_layer(files: &[(&str, &[u8], u32)]) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, *content).unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = Digest::of(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Stores layers + a config + an OCI manifest in `store`; returns the manifest digest.
pub fn store_image(store: &Store, layers: &[(Vec<u8>, Digest, &str)], cmd: &[&str]) -> Digest {
    store_image_for(store, layers, cmd, &Platform::host())
}

/// Like [`store_image`], for a given platform.
pub fn store_image_for(
    store: &Store,
    layers: &[(Vec<u8>, Digest, &str)],
    cmd: &[&str],
    platform: &Platform,
) -> Digest {
    let mut config = ImageConfig::scratch(platform);
    config.config.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
    let mut descs = Vec::new();
    for (blob, diff_id, media_type) in layers {
        let d = store.put_blob_bytes(blob).unwrap();
        config.rootfs.diff_ids.push(diff_id.clone());
        descs.push(Descriptor::new(*media_type, d, blob.len() as u64));
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_blob_bytes(&config_bytes).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(media::OCI_CONFIG, config_digest, config_bytes.len() as u64),
        layers: descs,
        annotations: None,
    };
    store
        .put_blob_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap()
}

/// A store with a two-layer image (one layer of `big` random-ish bytes); returns its manifest.
pub fn sample_image(store: &Store, big: usize, seed: u8) -> Digest {
    let (l1, d1) = make_layer(&[("etc/hello", format!("hello {seed}\n").as_bytes(), 0o644)]);
    let data = pseudo_random(big, seed);
    let (l2, d2) = make_layer(&[("data/blob.bin", &data, 0o644)]);
    store_image(
        store,
        &[
            (l1, d1, media::OCI_LAYER_GZIP),
            (l2, d2, media::OCI_LAYER_GZIP),
        ],
        &["/bin/true"],
    )
}

/// Incompressible deterministic bytes (xorshift).
pub fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed).wrapping_mul(0x1000_0000_01B3);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

pub fn open_store(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

/// Every blob a manifest in `store` names, with its size.
pub fn image_blobs(store: &Store, manifest: &Digest) -> Vec<(Digest, u64)> {
    let m: Manifest = serde_json::from_slice(&store.read_blob(manifest).unwrap()).unwrap();
    std::iter::once(&m.config)
        .chain(m.layers.iter())
        .map(|d| (d.digest.clone(), d.size))
        .collect()
}

pub fn no_progress() -> impl Fn(forge_registry::Progress) + Send + Sync {
    |_| {}
}

/// Collects progress events.
pub fn recorder() -> (
    Arc<Mutex<Vec<forge_registry::Progress>>>,
    impl Fn(forge_registry::Progress) + Send + Sync,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    (log, move |p| l2.lock().unwrap().push(p))
}
