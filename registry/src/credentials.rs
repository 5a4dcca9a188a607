//! Stored registry credentials, in Docker's `config.json` format, so that `docker login`,
//! `skopeo login --authfile` and `forge login` share one file.
//!
//! Lookup order for a registry (as Docker does it): `credHelpers[<registry>]`, then
//! `credsStore`, then `auths[<registry>]` (`auth` = base64 of `user:password`, or separate
//! `username`/`password`, or `identitytoken`, or `registrytoken`). A helper is the program
//! `docker-credential-<name>`, run as `get`/`store`/`erase` with the server on standard input.
//!
//! Docker Hub is stored under `https://index.docker.io/v1/`; other registries under their
//! `host[:port]`. Keys written with a scheme or a path are matched by their host part.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::auth::Credentials;
use crate::error::CredentialsError;

/// The key Docker uses for Docker Hub in `auths` and with credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A docker `config.json`, kept as JSON so that fields forge does not know survive a rewrite.
#[derive(Clone)]
pub struct DockerConfig {
    path: PathBuf,
    json: Map<String, Value>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registries: Vec<&String> = self.auths().map(|a| a.keys().collect()).unwrap_or_default();
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &registries)
            .field("credsStore", &self.json.get("credsStore"))
            .finish_non_exhaustive()
    }
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> Result<PathBuf, CredentialsError> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir).join("config.json"));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(CredentialsError::NoHome)?;
        Ok(PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// Loads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig, CredentialsError> {
        let json = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    let source =
                        serde_json::Error::io(std::io::Error::other("expected a JSON object"));
                    return Err(CredentialsError::Parse {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                Err(source) => {
                    return Err(CredentialsError::Parse {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(DockerConfig {
            path: path.to_path_buf(),
            json,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.json.get("auths").and_then(Value::as_object)
    }

    /// The helper configured for a registry, if any (`credHelpers` first, then `credsStore`).
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let host = registry_host(registry);
        if let Some(helpers) = self.json.get("credHelpers").and_then(Value::as_object) {
            for (k, v) in helpers {
                if registry_host(k) == host {
                    if let Some(name) = v.as_str().filter(|s| !s.is_empty()) {
                        return Some(name.to_string());
                    }
                }
            }
        }
        self.json
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The credentials for a registry (`docker.io`, `localhost:5000`, …); anonymous when none are
    /// stored.
    pub fn credentials_for(&self, registry: &str) -> Result<Credentials, CredentialsError> {
        if let Some(helper) = self.helper_for(registry) {
            return helper_get(&helper, registry);
        }
        let host = registry_host(registry);
        let Some(auths) = self.auths() else {
            return Ok(Credentials::Anonymous);
        };
        // An exact key wins over another spelling of the same host.
        let entry = auths.get(registry).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| registry_host(k) == host)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry.and_then(Value::as_object) else {
            return Ok(Credentials::Anonymous);
        };
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(token) = field("registrytoken") {
            return Ok(Credentials::RegistryToken(token.to_string()));
        }
        let (mut username, mut password) = (
            field("username").map(str::to_string),
            field("password").map(str::to_string),
        );
        if let Some(auth) = field("auth") {
            let bad = || CredentialsError::BadAuthEntry {
                path: self.path.clone(),
                registry: registry.to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
            username = Some(u.to_string());
            password = Some(p.to_string());
        }
        if let Some(token) = field("identitytoken") {
            return Ok(Credentials::IdentityToken {
                username: username.unwrap_or_default(),
                token: token.to_string(),
            });
        }
        match (username, password) {
            (Some(username), Some(password)) => Ok(Credentials::Basic { username, password }),
            _ => Ok(Credentials::Anonymous),
        }
    }

    /// Stores credentials for a registry (through its helper when one is configured) and saves
    /// the file with mode 0600.
    pub fn store(
        &mut self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<(), CredentialsError> {
        if let Some(helper) = self.helper_for(registry) {
            return helper_store(&helper, registry, username, password);
        }
        let key = config_key(registry);
        self.remove_spellings(registry);
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let auths = self
            .json
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(auth));
        auths
            .as_object_mut()
            .expect("made an object")
            .insert(key, Value::Object(entry));
        self.save()
    }

    /// Removes stored credentials for a registry. Returns whether there were any.
    pub fn erase(&mut self, registry: &str) -> Result<bool, CredentialsError> {
        let mut found = false;
        if let Some(helper) = self.helper_for(registry) {
            found |= helper_erase(&helper, registry)?;
        }
        if self.remove_spellings(registry) {
            found = true;
            self.save()?;
        }
        Ok(found)
    }

    fn remove_spellings(&mut self, registry: &str) -> bool {
        let host = registry_host(registry);
        let Some(auths) = self.json.get_mut("auths").and_then(Value::as_object_mut) else {
            return false;
        };
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| registry_host(k) == host)
            .cloned()
            .collect();
        for k in &keys {
            auths.remove(k);
        }
        !keys.is_empty()
    }

    /// Writes the file atomically (temp file + rename), readable by the owner only.
    pub fn save(&self) -> Result<(), CredentialsError> {
        let werr = |source| CredentialsError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(self.json.clone()))
            .expect("JSON values serialize");
        bytes.push(b'\n');
        let tmp = dir.join(format!(".config.json.forge-{}", std::process::id()));
        let result = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(werr)
    }
}

/// The host part of a registry spelling: `https://index.docker.io/v1/` → `docker.io`,
/// `http://localhost:5000/` → `localhost:5000`. All Docker Hub spellings become `docker.io`.
pub fn registry_host(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// The key Docker writes for a registry: `https://index.docker.io/v1/` for Docker Hub, the host
/// otherwise.
pub fn config_key(registry: &str) -> String {
    match registry_host(registry).as_str() {
        "docker.io" => DOCKER_HUB_KEY.to_string(),
        host => host.to_string(),
    }
}

fn helper_program(helper: &str) -> String {
    format!("docker-credential-{helper}")
}

/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn run_helper(
    helper: &str,
    registry: &str,
    action: &str,
    input: &[u8],
) -> Result<(bool, Vec<u8>), CredentialsError> {
    let program = helper_program(helper);
    let fail = |reason: String| CredentialsError::Helper {
        program: program.clone(),
        registry: registry.to_string(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CredentialsError::HelperMissing {
                    program: program.clone(),
                    registry: registry.to_string(),
                }
            } else {
                fail(e.to_string())
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper may exit before reading everything; its exit status tells.
        let _ = stdin.write_all(input);
    }
    // Read the pipes on threads so that a helper that never exits (waiting for a keychain
    // prompt, say) can be stopped after HELPER_TIMEOUT.
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "no answer within {} seconds",
                    HELPER_TIMEOUT.as_secs()
                )));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    let out = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if out.status.success() {
        return Ok((true, out.stdout));
    }
    // Helpers print their error message on stdout. It never contains the secret.
    let msg = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_string();
    Ok((false, msg.into_bytes()))
}

fn is_not_found(msg: &[u8]) -> bool {
    String::from_utf8_lossy(msg)
        .to_ascii_lowercase()
        .contains("credentials not found")
}

fn helper_get(helper: &str, registry: &str) -> Result<Credentials, CredentialsError> {
    let server = config_key(registry);
    let (ok, out) = run_helper(helper, registry, "get", server.as_bytes())?;
    if !ok {
        if is_not_found(&out) {
            return Ok(Credentials::Anonymous);
        }
        return Err(CredentialsError::Helper {
            program: helper_program(helper),
            registry: registry.to_string(),
            reason: String::from_utf8_lossy(&out).into_owned(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_slice(&out).map_err(|e| CredentialsError::Helper {
        program: helper_program(helper),
        registry: registry.to_string(),
        reason: format!("unreadable answer: {e}"),
    })?;
    Ok(match (reply.username.as_str(), reply.secret.is_empty()) {
        (_, true) => Credentials::Anonymous,
        ("<token>", false) => Credentials::IdentityToken {
            username: String::new(),
            token: reply.secret,
        },
        (_, false) => Credentials::Basic {
            username: reply.username,
            password: reply.secret,
        },
    })
}

fn helper_store(
    helper: &str,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), CredentialsError> {
    let input = serde_json::json!({ "ServerURL": config_key(registry), "Username": username, "Secret": password });
    let (ok, out) = run_helper(helper, registry, "store", input.to_string().as_bytes())?;
    if ok {
        Ok(())
    } else {
        Err(CredentialsError::Helper {
            program: helper_program(helper),
            registry: registry.to_string(),
            reason: String::from_utf8_lossy(&out).into_owned(),
        })
    }
}

fn helper_erase(helper: &str, registry: &str) -> Result<bool, CredentialsError> {
    let (ok, out) = run_helper(helper, registry, "erase", config_key(registry).as_bytes())?;
    match (ok, is_not_found(&out)) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => Err(CredentialsError::Helper {
            program: helper_program(helper),
            registry: registry.to_string(),
            reason: String::from_utf8_lossy(&out).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn host_normalization() {
        let table = [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("http://LOCALHOST:5000/v2/", "localhost:5000"),
            ("ghcr.io", "ghcr.io"),
        ];
        for (input, want) in table {
            assert_eq!(registry_host(input), want, "{input}");
        }
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("https://ghcr.io"), "ghcr.io");
    }

    #[test]
    fn reads_all_auth_forms() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": { "auth": b64("hub:pw:with:colons") },
                "localhost:5000": { "username": "u", "password": "p" },
                "https://tok.example:443": { "auth": b64("me:"), "identitytoken": "refresh" },
                "reg.example": { "registrytoken": "bearer" },
                "bad.example": { "auth": "!!!" },
                "empty.example": {}
            },
            "HttpHeaders": { "X-Keep": "me" }
        });
        let path = write(dir.path(), &json.to_string());
        let cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.credentials_for("docker.io").unwrap(),
            Credentials::basic("hub", "pw:with:colons")
        );
        assert_eq!(
            cfg.credentials_for("localhost:5000").unwrap(),
            Credentials::basic("u", "p")
        );
        assert_eq!(
            cfg.credentials_for("tok.example:443").unwrap(),
            Credentials::IdentityToken {
                username: "me".into(),
                token: "refresh".into()
            }
        );
        assert_eq!(
            cfg.credentials_for("reg.example").unwrap(),
            Credentials::RegistryToken("bearer".into())
        );
        assert!(matches!(
            cfg.credentials_for("bad.example"),
            Err(CredentialsError::BadAuthEntry { .. })
        ));
        assert_eq!(
            cfg.credentials_for("empty.example").unwrap(),
            Credentials::Anonymous
        );
        assert_eq!(
            cfg.credentials_for("other.example").unwrap(),
            Credentials::Anonymous
        );
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("refresh") && !dbg.contains(&b64("hub:pw:with:colons")),
            "{dbg}"
        );
    }

    #[test]
    fn missing_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DockerConfig::load(&dir.path().join("nope.json")).unwrap();
        assert_eq!(
            cfg.credentials_for("docker.io").unwrap(),
            Credentials::Anonymous
        );
        let p = write(dir.path(), "{not json");
        assert!(matches!(
            DockerConfig::load(&p),
            Err(CredentialsError::Parse { .. })
        ));
        let p = write(dir.path(), "[]");
        assert!(matches!(
            DockerConfig::load(&p),
            Err(CredentialsError::Parse { .. })
        ));
    }

    #[test]
    fn store_and_erase_keep_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"auths":{"http://localhost:5000/":{"auth":"eDp5"}},"psFormat":"table"}"#,
        );
        let mut cfg = DockerConfig::load(&path).unwrap();
        cfg.store("localhost:5000", "alice", "s3cret").unwrap();
        cfg.store("docker.io", "bob", "pw").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["psFormat"], "table");
        assert!(
            raw["auths"].get("http://localhost:5000/").is_none(),
            "old spelling replaced"
        );
        assert_eq!(raw["auths"]["localhost:5000"]["auth"], "YWxpY2U6czNjcmV0");
        assert!(raw["auths"].get(DOCKER_HUB_KEY).is_some());

        let mut cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.credentials_for("localhost:5000").unwrap(),
            Credentials::basic("alice", "s3cret")
        );
        assert!(cfg.erase("localhost:5000").unwrap());
        assert!(!cfg.erase("localhost:5000").unwrap());
        let cfg = DockerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.credentials_for("localhost:5000").unwrap(),
            Credentials::Anonymous
        );
        assert_eq!(
            cfg.credentials_for("index.docker.io").unwrap(),
            Credentials::basic("bob", "pw")
        );
    }

    #[test]
    fn credential_helpers() {
        // A fake helper on PATH that answers `get` for one server and logs what it was asked.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("log");
        let script = format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {log}\ncase \"$1 $server\" in\n\
             'get helped.example') echo '{{\"ServerURL\":\"helped.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}}';;\n\
             'get tok.example') echo '{{\"Username\":\"<token>\",\"Secret\":\"rt\"}}';;\n\
             get*) echo 'credentials not found in native keychain'; exit 1;;\n\
             *) echo 'boom'; exit 1;;\nesac\n",
            log = log.display()
        );
        let helper = bin.join("docker-credential-fake");
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();

        // PATH is process-global: use absolute-path lookups through a PATH that has the helper
        // first, restored right after (this test is the only one touching PATH).
        let old_path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&old_path));
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());

        let path = write(
            dir.path(),
            r#"{"credsStore":"fake","credHelpers":{"missing.example":"nonexistent-forge-test"}}"#,
        );
        let cfg = DockerConfig::load(&path).unwrap();
        let got = (
            cfg.credentials_for("helped.example"),
            cfg.credentials_for("tok.example"),
            cfg.credentials_for("unknown.example"),
            cfg.credentials_for("missing.example"),
            DockerConfig::load(&path)
                .unwrap()
                .store("helped.example", "u", "p"),
        );
        std::env::set_var("PATH", old_path);

        assert_eq!(got.0.unwrap(), Credentials::basic("hu", "hs"));
        assert_eq!(
            got.1.unwrap(),
            Credentials::IdentityToken {
                username: String::new(),
                token: "rt".into()
            }
        );
        assert_eq!(got.2.unwrap(), Credentials::Anonymous);
        assert!(
            matches!(got.3, Err(CredentialsError::HelperMissing { .. })),
            "{:?}",
            got.3
        );
        match got.4 {
            Err(CredentialsError::Helper { reason, .. }) => assert_eq!(reason, "boom"),
            other => panic!("store through a failing helper: {other:?}"),
        }
        let asked = std::fs::read_to_string(&log).unwrap();
        assert!(
            asked.contains("get helped.example") && asked.contains("get unknown.example"),
            "{asked}"
        );
    }
}
