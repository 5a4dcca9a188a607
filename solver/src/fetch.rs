//! `ADD <url>`: downloading remote files. The solver knows only the [`UrlFetcher`] trait; the
//! frontend provides an HTTP implementation.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use forge_cache::{Store, TempDir};

use crate::context::{Context, Ignore};
use crate::error::{Location, SolveError};

/// What a download produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The file name to use in the image: the URL path's last segment (or the server's
    /// `Content-Disposition` name).
    pub file_name: String,
    /// `Last-Modified`, as Unix seconds, when the server sent it.
    pub mtime: Option<i64>,
}

/// Downloads URLs.
pub trait UrlFetcher: Send + Sync {
    /// Writes the body of `url` to `dest` (a file that does not exist yet).
    fn fetch(&self, url: &str, dest: &Path) -> Result<Fetched, String>;
}

/// The build's URL fetcher, if any.
#[derive(Clone, Default)]
pub struct Fetcher(pub Option<Arc<dyn UrlFetcher>>);

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Fetcher(http)" } else { "Fetcher(none)" })
    }
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The last path segment of a URL, without query or fragment.
pub fn url_file_name(url: &str) -> Option<String> {
    let no_frag = url.split(['#', '?']).next()?;
    let path = no_frag.split_once("://").map(|(_, r)| r).unwrap_or(no_frag);
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    let name = path.rsplit('/').next()?.to_string();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// Downloaded sources, as a context of their own.
pub struct Downloads {
    _dir: TempDir,
    pub context: Arc<Context>,
    pub names: Vec<String>,
}

/// Downloads every URL into a fresh directory (mode 0600, mtime from `Last-Modified`, as
/// Docker does) and verifies `--checksum`.
pub fn download(
    fetcher: Option<&dyn UrlFetcher>,
    urls: &[&String],
    checksum: Option<&str>,
    store: &Store,
    loc: &Location,
) -> Result<Downloads, SolveError> {
    let fetcher = fetcher.ok_or_else(|| SolveError::step(loc, "this build has no way to download URLs"))?;
    if checksum.is_some() && urls.len() != 1 {
        return Err(SolveError::step(loc, "ADD --checksum needs exactly one source"));
    }
    let dir = store.temp_dir("add-url")?;
    let mut names = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let part = dir.path().join(format!("download-{i}"));
        let got = fetcher.fetch(url, &part).map_err(|e| SolveError::Step {
            location: loc.clone(),
            message: format!("downloading {url}: {e}"),
            help: None,
        })?;
        let name = url_file_name(url).unwrap_or(got.file_name.clone());
        if names.contains(&name) {
            std::fs::remove_file(&part).ok();
            return Err(SolveError::step(loc, format!("two ADD sources download to the same name {name:?}")));
        }
        if let Some(want) = checksum {
            let have = forge_oci::Digest::of(&std::fs::read(&part).map_err(|e| SolveError::io(&part, e))?);
            if have.to_string() != want {
                return Err(SolveError::Step {
                    location: loc.clone(),
                    message: format!("checksum mismatch for {url}: expected {want}, got {have}"),
                    help: None,
                });
            }
        }
        let final_path = dir.path().join(&name);
        std::fs::rename(&part, &final_path).map_err(|e| SolveError::io(&final_path, e))?;
        std::fs::set_permissions(&final_path, std::fs::Permissions::from_mode(0o600)).map_err(|e| SolveError::io(&final_path, e))?;
        crate::copy::set_mtime(&final_path, (got.mtime.unwrap_or(0), 0)).map_err(|e| SolveError::io(&final_path, e))?;
        names.push(name);
    }
    let context = Arc::new(Context::walk(dir.path(), Ignore::none())?);
    Ok(Downloads { _dir: dir, context, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(url_file_name("https://example.com/a/b/tool.tar.gz?x=1#frag").as_deref(), Some("tool.tar.gz"));
        assert_eq!(url_file_name("http://127.0.0.1:8080/file").as_deref(), Some("file"));
        assert_eq!(url_file_name("https://example.com/"), None);
        assert_eq!(url_file_name("https://example.com"), None);
        assert!(is_url("https://x") && !is_url("file.txt"));
    }
}
