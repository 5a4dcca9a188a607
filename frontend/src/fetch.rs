//! HTTP downloads for `ADD <url>`: the [`UrlFetcher`] the frontend gives the solver.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use forge_solver::{Fetched, UrlFetcher};

/// Downloads with reqwest (rustls, the system's trust store) on a runtime made on first use.
pub struct HttpFetcher {
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

impl Default for HttpFetcher {
    fn default() -> Self {
        HttpFetcher { runtime: OnceLock::new() }
    }
}

fn file_name_from_disposition(v: &str) -> Option<String> {
    let part = v.split(';').map(str::trim).find(|p| p.starts_with("filename="))?;
    let name = part.trim_start_matches("filename=").trim_matches('"');
    let name = name.rsplit('/').next()?.to_string();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

impl UrlFetcher for HttpFetcher {
    fn fetch(&self, url: &str, dest: &Path) -> Result<Fetched, String> {
        let rt = self
            .runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the network runtime: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120))
                .redirect(reqwest::redirect::Policy::limited(10))
                .user_agent(concat!("forge/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| e.to_string())?;
            let mut resp = client.get(url).send().await.map_err(|e| error_chain(&e))?;
            if !resp.status().is_success() {
                return Err(format!("the server answered {}", resp.status()));
            }
            let mtime = resp
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            let file_name = resp
                .headers()
                .get(reqwest::header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(file_name_from_disposition)
                .unwrap_or_else(|| "download".to_string());
            let mut f = std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
            while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
                f.write_all(&chunk).map_err(|e| format!("{}: {e}", dest.display()))?;
            }
            f.sync_all().map_err(|e| format!("{}: {e}", dest.display()))?;
            Ok(Fetched { file_name, mtime })
        })
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names() {
        assert_eq!(file_name_from_disposition("attachment; filename=\"tool.tgz\"").as_deref(), Some("tool.tgz"));
        assert_eq!(file_name_from_disposition("attachment; filename=../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(file_name_from_disposition("inline"), None);
    }
}
