//! The registry client: manifests and blobs one at a time (the building blocks the remote cache
//! uses), and whole-image [`Client::pull`] and [`Client::push`] on top of them.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::mpsc;

use forge_cache::{Store, StoreError};
use forge_oci::reference::Reference;
use forge_oci::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};

use crate::auth::{Credentials, Scopes};
use crate::credentials::{registry_host, DockerConfig};
use crate::error::RegistryError;
use crate::transport::{ClientOptions, CredentialSource, Req, Target, Transport};

/// What a transfer is doing, for progress displays. Sent from the task running the transfer;
/// keep the callback cheap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A tag or digest resolved to a manifest or index.
    Resolved {
        reference: String,
        digest: Digest,
        media_type: String,
    },
    /// A blob transfer starts.
    BlobStarted { digest: Digest, size: u64 },
    /// Bytes moved so far for a blob (sent at most every MiB or quarter second).
    BlobProgress {
        digest: Digest,
        done: u64,
        size: u64,
    },
    /// A transient failure; the transfer goes on (resuming where it stopped when it can).
    Retrying {
        digest: Digest,
        attempt: u32,
        reason: String,
    },
    /// A blob is done.
    BlobDone {
        digest: Digest,
        size: u64,
        outcome: BlobOutcome,
    },
    /// A manifest was stored in the registry under a tag or digest.
    ManifestPushed { reference: String, digest: Digest },
}

/// How a blob got where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Nothing to do: the destination (local store for pulls, registry for pushes) had it.
    AlreadyPresent,
    Downloaded,
    Uploaded,
    /// The registry linked it from another repository (cross-repository mount).
    Mounted,
}

/// The result of [`Client::pull`]: the image's platform manifest and config, all of whose blobs
/// are now in the store.
#[derive(Clone, Debug)]
pub struct PulledImage {
    pub reference: Reference,
    /// The digest of the platform manifest (not of the index the tag may point to).
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    /// The index the reference resolved to, when it was an index or manifest list.
    pub index_digest: Option<Digest>,
    pub config: ImageConfig,
    pub config_digest: Digest,
}

/// A manifest or index as the registry served it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// An OCI distribution client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    t: Arc<Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.t.opts)
            .finish_non_exhaustive()
    }
}

/// Every manifest media type forge reads, for `Accept`.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

const PROGRESS_STEP: u64 = 1024 * 1024;

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        Ok(Client {
            t: Arc::new(Transport::new(opts)?),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.t.opts
    }

    // ------------------------------------------------------------------ manifests

    /// Fetches the manifest or index a reference points to (by digest when it has one, else by
    /// tag or `latest`), verifying the digest. Returns the bytes, the media type and the digest.
    pub async fn get_manifest(
        &self,
        r: &Reference,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let m = self.fetch_manifest(r).await?;
        Ok((m.bytes, m.media_type, m.digest))
    }

    /// Like [`Client::get_manifest`], as a struct.
    pub async fn fetch_manifest(&self, r: &Reference) -> Result<FetchedManifest, RegistryError> {
        let url = self
            .t
            .url(r, &format!("manifests/{}", r.manifest_reference()))?;
        let req = Req::new(Method::GET, url).header(ACCEPT, ACCEPT_MANIFESTS);
        let resp = self
            .t
            .send(&r.registry, &Scopes::pull(&r.repository), &req)
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.t.status_error(resp, Target::Manifest(r)).await);
        }
        let header_type = header_str(&resp, CONTENT_TYPE);
        let header_digest =
            header_str(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let bytes = self
            .t
            .read_small(
                resp,
                &format!("manifest of {r}"),
                self.t.opts.max_manifest_size,
            )
            .await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = r.digest.as_ref().or(header_digest.as_ref()) {
            if *expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest of {r}"),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let media_type = detect_media_type(header_type.as_deref(), &bytes).ok_or_else(|| {
            RegistryError::InvalidManifest {
                reference: r.to_string(),
                reason: "not a JSON manifest or index".into(),
            }
        })?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Stores a manifest or index under the reference's tag (or digest; `latest` when it has
    /// neither). Returns the manifest's digest.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let url = self
            .t
            .url(r, &format!("manifests/{}", r.manifest_reference()))?;
        let mut req = Req::new(Method::PUT, url).header(CONTENT_TYPE, media_type);
        req.body = Some(Bytes::copy_from_slice(bytes));
        let resp = self
            .t
            .send(&r.registry, &Scopes::push(&r.repository), &req)
            .await?;
        if !resp.status().is_success() {
            return Err(self.t.status_error(resp, Target::Push(r)).await);
        }
        if let Some(got) =
            header_str(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok())
        {
            if got != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest pushed to {r}"),
                    expected: digest,
                    actual: got,
                });
            }
        }
        Ok(digest)
    }

    // ------------------------------------------------------------------ blobs

    /// The size of a blob when the repository has it, `None` when it does not.
    pub async fn head_blob(
        &self,
        r: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.head_blob_scoped(r, digest, &Scopes::pull(&r.repository))
            .await
    }

    async fn head_blob_scoped(
        &self,
        r: &Reference,
        digest: &Digest,
        scopes: &Scopes,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.t.url(r, &format!("blobs/{digest}"))?;
        let resp = self
            .t
            .send(&r.registry, scopes, &Req::new(Method::HEAD, url))
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                header_str(&resp, CONTENT_LENGTH)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ if scopes.as_slice().iter().any(|s| s.ends_with(",push")) => {
                Err(self.t.status_error(resp, Target::Push(r)).await)
            }
            _ => Err(self.t.status_error(resp, Target::Blob(r, digest)).await),
        }
    }

    /// Downloads a blob into the store unless it is already there. The bytes are verified
    /// against the descriptor's digest and size while they stream into a temp file; the blob
    /// only becomes visible in the store once complete and correct. Interrupted downloads resume
    /// with `Range` requests. Returns whether anything was downloaded.
    pub async fn fetch_blob_into_store(
        &self,
        r: &Reference,
        desc: &Descriptor,
        store: &Store,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<bool, RegistryError> {
        if store.has_blob(&desc.digest) {
            progress(Progress::BlobDone {
                digest: desc.digest.clone(),
                size: desc.size,
                outcome: BlobOutcome::AlreadyPresent,
            });
            return Ok(false);
        }
        progress(Progress::BlobStarted {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        let (tx, rx) = mpsc::channel::<Piece>(32);
        let writer = {
            let store = store.clone();
            let expected = desc.digest.clone();
            tokio::task::spawn_blocking(move || write_blob(&store, rx, &expected))
        };
        let downloaded = self.download(r, desc, &tx, progress).await;
        if downloaded.is_ok() {
            let _ = tx.send(Piece::End).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| RegistryError::store("blob writer task", std::io::Error::other(e)))?;
        let what = || format!("blob {} of {r}", desc.digest);
        match (downloaded, written) {
            (Ok(()), Ok((_, n))) if n != desc.size => Err(RegistryError::SizeMismatch {
                what: what(),
                expected: desc.size,
                actual: n,
            }),
            (Ok(()), Ok(_)) => {
                progress(Progress::BlobDone {
                    digest: desc.digest.clone(),
                    size: desc.size,
                    outcome: BlobOutcome::Downloaded,
                });
                Ok(true)
            }
            (
                Ok(()),
                Err(WriteFail::Store(StoreError::DigestMismatch {
                    expected, actual, ..
                })),
            ) => Err(RegistryError::DigestMismatch {
                what: what(),
                expected,
                actual,
            }),
            (Ok(()), Err(e))
            | (
                Err(RegistryError::Store { .. }),
                Err(e @ (WriteFail::Store(_) | WriteFail::Io(_))),
            ) => Err(e.into_registry_error(&desc.digest)),
            (Err(e), _) => Err(e),
        }
    }

    /// Streams a blob's bytes into `tx`, retrying and resuming until exactly `desc.size` bytes
    /// were sent.
    async fn download(
        &self,
        r: &Reference,
        desc: &Descriptor,
        tx: &mpsc::Sender<Piece>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let url = self.t.url(r, &format!("blobs/{}", desc.digest))?;
        let scopes = Scopes::pull(&r.repository);
        let what = || format!("blob {} of {r}", desc.digest);
        let size = desc.size;
        let max_retries = self.t.opts.max_retries;
        let mut offset = 0u64;
        let mut reported = 0u64;
        let mut stalls = 0u32; // consecutive attempts that added nothing
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let mut req = Req::new(Method::GET, url.clone());
            req.bounded = false;
            if offset > 0 {
                req = req.header(RANGE, &format!("bytes={offset}-"));
            }
            let resp = self.t.send(&r.registry, &scopes, &req).await?;
            // Bytes at the start of the body that we already have.
            let mut skip = match resp.status() {
                StatusCode::OK => {
                    if resp.content_length().is_some_and(|n| n > size) {
                        return Err(RegistryError::TooLarge {
                            what: what(),
                            limit: size,
                        });
                    }
                    offset
                }
                // Asked to resume past the blob's end: it is shorter than the descriptor says.
                StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                    return Err(RegistryError::SizeMismatch {
                        what: what(),
                        expected: size,
                        actual: offset,
                    });
                }
                StatusCode::PARTIAL_CONTENT => {
                    let start =
                        content_range_start(&resp).ok_or_else(|| RegistryError::Protocol {
                            url: url.to_string(),
                            reason: "206 response without a usable Content-Range".into(),
                        })?;
                    if start > offset {
                        return Err(RegistryError::Protocol {
                            url: url.to_string(),
                            reason: format!(
                                "asked for bytes from {offset}, got a range starting at {start}"
                            ),
                        });
                    }
                    offset - start
                }
                _ => {
                    return Err(self
                        .t
                        .status_error(resp, Target::Blob(r, &desc.digest))
                        .await)
                }
            };
            let before = offset;
            let mut body = resp.bytes_stream();
            let failure = loop {
                match body.next().await {
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(mut chunk)) => {
                        if skip > 0 {
                            let n = skip.min(chunk.len() as u64);
                            chunk = chunk.slice(n as usize..);
                            skip -= n;
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        if offset + chunk.len() as u64 > size {
                            return Err(RegistryError::TooLarge {
                                what: what(),
                                limit: size,
                            });
                        }
                        offset += chunk.len() as u64;
                        if tx.send(Piece::Data(chunk)).await.is_err() {
                            return Err(RegistryError::store(
                                "writing blob",
                                std::io::Error::other("blob writer stopped"),
                            ));
                        }
                        if offset - reported >= PROGRESS_STEP || offset == size {
                            reported = offset;
                            progress(Progress::BlobProgress {
                                digest: desc.digest.clone(),
                                done: offset,
                                size,
                            });
                        }
                    }
                }
            };
            if offset == size && failure.is_none() {
                return Ok(());
            }
            if offset == size {
                // Every byte arrived; a reset after the last one does not matter.
                return Ok(());
            }
            stalls = if offset > before { 0 } else { stalls + 1 };
            if stalls > max_retries || attempts > max_retries.saturating_mul(4).max(1) {
                return Err(match failure {
                    Some(source) => RegistryError::Network {
                        url: url.to_string(),
                        attempts,
                        source,
                    },
                    None => RegistryError::SizeMismatch {
                        what: what(),
                        expected: size,
                        actual: offset,
                    },
                });
            }
            let reason = match &failure {
                Some(e) => format!("{e} after {offset} of {size} bytes"),
                None => format!("body ended after {offset} of {size} bytes"),
            };
            progress(Progress::Retrying {
                digest: desc.digest.clone(),
                attempt: attempts,
                reason,
            });
            tokio::time::sleep(self.t.backoff(stalls.max(1))).await;
        }
    }

    /// Makes a blob from the store present in the `dest` repository: nothing when it is already
    /// there, a cross-repository mount from `mount_from` when the registry allows it, else an
    /// upload streamed from disk (one PUT up to `chunk_size`, PATCH chunks above).
    pub async fn push_blob_from_store(
        &self,
        store: &Store,
        dest: &Reference,
        digest: &Digest,
        mount_from: Option<&Reference>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<BlobOutcome, RegistryError> {
        let size = store
            .blob_size(digest)
            .map_err(|e| store_err(format!("blob {digest}"), e))?;
        let mount_from =
            mount_from.filter(|m| m.registry == dest.registry && m.repository != dest.repository);
        let mut scopes = Scopes::push(&dest.repository);
        if let Some(m) = mount_from {
            scopes = scopes.and(format!("repository:{}:pull", m.repository));
        }
        if self
            .head_blob_scoped(dest, digest, &scopes)
            .await?
            .is_some()
        {
            progress(Progress::BlobDone {
                digest: digest.clone(),
                size,
                outcome: BlobOutcome::AlreadyPresent,
            });
            return Ok(BlobOutcome::AlreadyPresent);
        }
        progress(Progress::BlobStarted {
            digest: digest.clone(),
            size,
        });
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self
                .upload_once(store, dest, digest, size, mount_from, &scopes, progress)
                .await
            {
                Ok(outcome) => {
                    progress(Progress::BlobDone {
                        digest: digest.clone(),
                        size,
                        outcome,
                    });
                    return Ok(outcome);
                }
                Err(e)
                    if attempt <= self.t.opts.max_retries
                        && (is_transient(&e)
                            // a token that expired during a long upload: once, with a new one
                            || (attempt == 1 && matches!(e, RegistryError::Unauthorized { .. }))) =>
                {
                    progress(Progress::Retrying {
                        digest: digest.clone(),
                        attempt,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(self.t.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_once(
        &self,
        store: &Store,
        dest: &Reference,
        digest: &Digest,
        size: u64,
        mount_from: Option<&Reference>,
        scopes: &Scopes,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<BlobOutcome, RegistryError> {
        let mut start = self.t.url(dest, "blobs/uploads/")?;
        if let Some(m) = mount_from {
            start
                .query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", &m.repository);
        }
        let resp = self
            .t
            .send(
                &dest.registry,
                scopes,
                &Req::new(Method::POST, start.clone()).header(CONTENT_LENGTH, "0"),
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount_from.is_some() => return Ok(BlobOutcome::Mounted),
            StatusCode::ACCEPTED => {}
            _ => return Err(self.t.status_error(resp, Target::Push(dest)).await),
        }
        let mut location = location(&resp, &start)?;
        let sent = Arc::new(AtomicU64::new(0));
        if size <= self.t.opts.chunk_size {
            location
                .query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            let body = file_body(store, digest, 0, size, sent.clone())?;
            let rb = self
                .t
                .http
                .put(location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body);
            let resp = self
                .send_streaming(dest, scopes, rb, digest, size, &sent, progress)
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(self.t.status_error(resp, Target::Push(dest)).await);
            }
            check_digest_header(&resp, digest, dest)?;
            return Ok(BlobOutcome::Uploaded);
        }
        let mut offset = 0u64;
        let mut chunk_failures = 0u32;
        while offset < size {
            let len = self.t.opts.chunk_size.min(size - offset);
            let body = file_body(store, digest, offset, len, sent.clone())?;
            let rb = self
                .t
                .http
                .patch(location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{}-{}", offset, offset + len - 1))
                .header(CONTENT_LENGTH, len)
                .body(body);
            let failure = match self
                .send_streaming(dest, scopes, rb, digest, size, &sent, progress)
                .await
            {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    location = self::location(&resp, &location)?;
                    offset += len;
                    continue;
                }
                Ok(resp) => self.t.status_error(resp, Target::Push(dest)).await,
                Err(e) => e,
            };
            // A chunk failed: ask the registry how much of the upload it kept and go on from
            // there (the caller restarts the whole upload when this does not work out).
            chunk_failures += 1;
            if !is_transient(&failure) || chunk_failures > self.t.opts.max_retries {
                return Err(failure);
            }
            progress(Progress::Retrying {
                digest: digest.clone(),
                attempt: chunk_failures,
                reason: format!("chunk at {offset}: {failure}"),
            });
            tokio::time::sleep(self.t.backoff(chunk_failures)).await;
            let (new_location, kept) = self.upload_status(dest, scopes, &location).await?;
            if kept > size {
                return Err(failure);
            }
            location = new_location;
            offset = kept;
            sent.store(kept, Ordering::Relaxed);
        }
        location
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let rb = self
            .t
            .http
            .put(location.clone())
            .header(CONTENT_LENGTH, 0)
            .timeout(self.t.opts.request_timeout);
        let resp = self
            .send_streaming(dest, scopes, rb, digest, size, &sent, progress)
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.t.status_error(resp, Target::Push(dest)).await);
        }
        check_digest_header(&resp, digest, dest)?;
        Ok(BlobOutcome::Uploaded)
    }

    /// `GET <upload url>`: where an upload stands. Returns the URL to continue at and how many
    /// bytes the registry kept (its `Range: 0-<last>` header; `0-0` is read as nothing kept).
    async fn upload_status(
        &self,
        dest: &Reference,
        scopes: &Scopes,
        location: &reqwest::Url,
    ) -> Result<(reqwest::Url, u64), RegistryError> {
        let resp = self
            .t
            .send(
                &dest.registry,
                scopes,
                &Req::new(Method::GET, location.clone()),
            )
            .await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(self.t.status_error(resp, Target::Push(dest)).await);
        }
        let kept = header_str(&resp, RANGE)
            .and_then(|r| {
                let last: u64 = r
                    .trim_start_matches("bytes=")
                    .split('-')
                    .nth(1)?
                    .trim()
                    .parse()
                    .ok()?;
                Some(if last == 0 { 0 } else { last + 1 })
            })
            .unwrap_or(0);
        let next = match header_str(&resp, LOCATION) {
            Some(_) => self::location(&resp, location)?,
            None => location.clone(),
        };
        Ok((next, kept))
    }

    /// Sends a request whose body streams from disk (not replayable): once, with the current
    /// token, reporting progress while it runs.
    #[allow(clippy::too_many_arguments)]
    async fn send_streaming(
        &self,
        dest: &Reference,
        scopes: &Scopes,
        rb: reqwest::RequestBuilder,
        digest: &Digest,
        size: u64,
        sent: &AtomicU64,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Response, RegistryError> {
        let url = dest.to_string();
        let rb = match self.t.authorization(&dest.registry, scopes).await? {
            Some(a) => rb.header(reqwest::header::AUTHORIZATION, a),
            None => rb,
        };
        let fut = rb.send();
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.tick().await;
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tick.tick() => progress(Progress::BlobProgress { digest: digest.clone(), done: sent.load(Ordering::Relaxed), size }),
            }
        };
        let resp = result.map_err(|source| RegistryError::Network {
            url,
            attempts: 1,
            source,
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // The token may have expired mid-upload: forget it so that the retry gets a new one.
            self.t.forget_token(&dest.registry, scopes);
            return Err(self.t.status_error(resp, Target::Push(dest)).await);
        }
        progress(Progress::BlobProgress {
            digest: digest.clone(),
            done: sent.load(Ordering::Relaxed),
            size,
        });
        Ok(resp)
    }

    // ------------------------------------------------------------------ images

    /// Pulls an image: resolves the reference (choosing `platform` from an index), downloads
    /// the config and every missing layer in parallel (bounded by
    /// `max_concurrent_downloads`), then stores the manifest and the index. When this returns,
    /// the manifest and all its blobs are in the store, verified. The caller tags it.
    pub async fn pull(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &Store,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PulledImage, RegistryError> {
        let top = self.fetch_manifest(r).await?;
        progress(Progress::Resolved {
            reference: r.to_string(),
            digest: top.digest.clone(),
            media_type: top.media_type.clone(),
        });
        let (index, manifest) = if media::is_index(&top.media_type) {
            let index: Index = parse_json(r, &top.bytes)?;
            let chosen = select_platform(&index, platform).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    reference: r.to_string(),
                    wanted: platform.to_string(),
                    available: available_platforms(&index),
                }
            })?;
            let child = self
                .fetch_manifest(&r.with_digest(chosen.digest.clone()))
                .await?;
            if !media::is_manifest(&child.media_type) {
                return Err(RegistryError::UnsupportedMediaType {
                    reference: r.to_string(),
                    media_type: child.media_type,
                    context: format!("index entry for {platform} is not an image manifest"),
                });
            }
            (Some(top), child)
        } else if media::is_manifest(&top.media_type) {
            (None, top)
        } else {
            return Err(RegistryError::UnsupportedMediaType {
                reference: r.to_string(),
                media_type: top.media_type,
                context: "expected an image manifest or index".into(),
            });
        };
        let parsed: Manifest = parse_json(r, &manifest.bytes)?;
        let config_type = parsed.config.media_type.as_str();
        if config_type != media::OCI_CONFIG && config_type != media::DOCKER_CONFIG {
            return Err(RegistryError::UnsupportedMediaType {
                reference: r.to_string(),
                media_type: config_type.to_string(),
                context: "the manifest's config is not a container image config".into(),
            });
        }

        self.fetch_blob_into_store(r, &parsed.config, store, progress)
            .await?;
        let mut seen = std::collections::HashSet::new();
        let layers: Vec<&Descriptor> = parsed
            .layers
            .iter()
            .filter(|l| seen.insert(l.digest.clone()))
            .collect();
        stream::iter(
            layers
                .into_iter()
                .map(|l| self.fetch_blob_into_store(r, l, store, progress)),
        )
        .buffer_unordered(self.t.opts.max_concurrent_downloads.max(1))
        .try_collect::<Vec<bool>>()
        .await?;

        // Manifest after its blobs, index after the manifest: what the store has is complete.
        store_manifest(store, &manifest)?;
        if let Some(index) = &index {
            store_manifest(store, index)?;
        }
        let config_bytes = store
            .read_blob(&parsed.config.digest)
            .map_err(|e| store_err("read config".into(), e))?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| RegistryError::InvalidManifest {
                reference: r.to_string(),
                reason: format!("image config {}: {e}", parsed.config.digest),
            })?;
        Ok(PulledImage {
            reference: r.clone(),
            manifest_digest: manifest.digest,
            config_digest: parsed.config.digest.clone(),
            manifest: parsed,
            index_digest: index.map(|i| i.digest),
            config,
        })
    }

    /// Pushes an image (a manifest, or an index whose manifests are all in the store) from the
    /// store to `dest`: blobs first (in parallel, bounded by `max_concurrent_uploads`, mounted
    /// from `mount_from` when on the same registry), then the manifest under `dest`'s tag
    /// (`latest` when it has none). Returns the pushed manifest's digest.
    pub async fn push(
        &self,
        store: &Store,
        manifest_digest: &Digest,
        dest: &Reference,
        mount_from: Option<&Reference>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Digest, RegistryError> {
        let bytes = store
            .read_blob(manifest_digest)
            .map_err(|e| store_err(format!("manifest {manifest_digest}"), e))?;
        let media_type =
            detect_media_type(None, &bytes).ok_or_else(|| RegistryError::InvalidManifest {
                reference: manifest_digest.to_string(),
                reason: "not a JSON manifest or index".into(),
            })?;
        if media::is_index(&media_type) {
            let index: Index = parse_json(dest, &bytes)?;
            for child in &index.manifests {
                if !media::is_manifest(&child.media_type) && !media::is_index(&child.media_type) {
                    continue;
                }
                if !store.has_blob(&child.digest) {
                    return Err(RegistryError::store(
                        format!("index {manifest_digest} lists manifest {}", child.digest),
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not in the local store (pull all platforms first)",
                        ),
                    ));
                }
                let child_bytes = store
                    .read_blob(&child.digest)
                    .map_err(|e| store_err(format!("manifest {}", child.digest), e))?;
                let child_manifest: Manifest = parse_json(dest, &child_bytes)?;
                self.push_image_blobs(store, &child_manifest, dest, mount_from, progress)
                    .await?;
                let by_digest = dest
                    .without_tag_or_digest()
                    .with_digest(child.digest.clone());
                self.put_manifest(&by_digest, &child_bytes, &child.media_type)
                    .await?;
            }
        } else if media::is_manifest(&media_type) {
            let manifest: Manifest = parse_json(dest, &bytes)?;
            self.push_image_blobs(store, &manifest, dest, mount_from, progress)
                .await?;
        } else {
            return Err(RegistryError::UnsupportedMediaType {
                reference: dest.to_string(),
                media_type,
                context: "only image manifests and indexes can be pushed".into(),
            });
        }
        let target = dest.with_default_tag();
        let target = if target.tag.is_some() {
            Reference {
                digest: None,
                ..target
            }
        } else {
            target
        };
        let digest = self.put_manifest(&target, &bytes, &media_type).await?;
        progress(Progress::ManifestPushed {
            reference: target.to_string(),
            digest: digest.clone(),
        });
        Ok(digest)
    }

    async fn push_image_blobs(
        &self,
        store: &Store,
        manifest: &Manifest,
        dest: &Reference,
        mount_from: Option<&Reference>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let mut seen = std::collections::HashSet::new();
        let blobs: Vec<&Digest> = std::iter::once(&manifest.config)
            .chain(manifest.layers.iter())
            .map(|d| &d.digest)
            .filter(|d| seen.insert((*d).clone()))
            .collect();
        stream::iter(
            blobs
                .into_iter()
                .map(|d| self.push_blob_from_store(store, dest, d, mount_from, progress)),
        )
        .buffer_unordered(self.t.opts.max_concurrent_uploads.max(1))
        .try_collect::<Vec<BlobOutcome>>()
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------------ login

    /// Checks `username`/`password` against the registry's `/v2/` endpoint (through its token
    /// service when it has one) and, when they work, stores them in the docker config file
    /// (or its credential helper). `registry` is a host such as `docker.io` or
    /// `localhost:5000`; `https://` prefixes and paths are ignored.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<(), RegistryError> {
        let registry = registry_host(registry);
        self.t
            .set_credentials(&registry, Credentials::basic(username, password));
        let checked = self.check_registry(&registry).await;
        if let Err(e) = checked {
            self.t.forget_registry(&registry);
            return Err(e);
        }
        let path = self.config_path()?;
        let registry2 = registry.clone();
        let (user, pass) = (username.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            DockerConfig::load(&path)?.store(&registry2, &user, &pass)
        })
        .await
        .map_err(|e| RegistryError::store("credential writer task", std::io::Error::other(e)))??;
        Ok(())
    }

    /// Removes stored credentials for a registry. Returns whether any were stored.
    pub async fn logout(&self, registry: &str) -> Result<bool, RegistryError> {
        let registry = registry_host(registry);
        self.t.forget_registry(&registry);
        let path = self.config_path()?;
        let found =
            tokio::task::spawn_blocking(move || DockerConfig::load(&path)?.erase(&registry))
                .await
                .map_err(|e| {
                    RegistryError::store("credential writer task", std::io::Error::other(e))
                })??;
        Ok(found)
    }

    /// `GET /v2/`: succeeds when the registry answers and accepts the current credentials.
    pub async fn check_registry(&self, registry: &str) -> Result<(), RegistryError> {
        let registry = registry_host(registry);
        let api = if registry == forge_oci::reference::DOCKER_HUB {
            forge_oci::reference::DOCKER_HUB_API
        } else {
            &registry
        };
        let url = self.t.registry_url(&registry, api, "")?;
        let resp = self
            .t
            .send(&registry, &Scopes::none(), &Req::new(Method::GET, url))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.t.status_error(resp, Target::Registry(&registry)).await)
        }
    }

    fn config_path(&self) -> Result<std::path::PathBuf, RegistryError> {
        match &self.t.opts.credentials {
            CredentialSource::DockerConfig(Some(p)) => Ok(p.clone()),
            _ => Ok(DockerConfig::default_path()?),
        }
    }
}

/// One piece of a download on its way to the blob writer thread.
enum Piece {
    Data(Bytes),
    /// All bytes were sent; commit.
    End,
}

enum WriteFail {
    Store(StoreError),
    Io(std::io::Error),
    /// The download stopped before `End`; nothing was committed.
    Aborted,
}

impl WriteFail {
    fn into_registry_error(self, digest: &Digest) -> RegistryError {
        match self {
            WriteFail::Store(e) => store_err(format!("writing blob {digest}"), e),
            WriteFail::Io(e) => RegistryError::store(format!("writing blob {digest}"), e),
            WriteFail::Aborted => RegistryError::store(
                format!("writing blob {digest}"),
                std::io::Error::other("download aborted"),
            ),
        }
    }
}

/// Runs on a blocking thread: writes pieces into a store temp file, commits on `End` after
/// verifying the digest. Dropping the writer on any other path removes the temp file.
fn write_blob(
    store: &Store,
    mut rx: mpsc::Receiver<Piece>,
    expected: &Digest,
) -> Result<(Digest, u64), WriteFail> {
    let mut w = store.blob_writer().map_err(WriteFail::Store)?;
    while let Some(piece) = rx.blocking_recv() {
        match piece {
            Piece::Data(b) => w.write_all(&b).map_err(WriteFail::Io)?,
            Piece::End => return w.commit(Some(expected)).map_err(WriteFail::Store),
        }
    }
    Err(WriteFail::Aborted)
}

/// A request body streaming `len` bytes of a stored blob from `offset`, read on a blocking
/// thread, 256 KiB at a time; `sent` counts the bytes handed to the connection.
fn file_body(
    store: &Store,
    digest: &Digest,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> Result<reqwest::Body, RegistryError> {
    let mut file = store
        .open_blob(digest)
        .map_err(|e| store_err(format!("blob {digest}"), e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| RegistryError::store(format!("blob {digest}"), e))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; left.min(256 * 1024) as usize];
            let item = match file.read(&mut buf) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return; // the request was dropped, or reading failed (already reported)
            }
        }
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(reqwest::Body::wrap_stream(body))
}

fn store_manifest(store: &Store, m: &FetchedManifest) -> Result<(), RegistryError> {
    let d = store
        .put_blob_bytes(&m.bytes)
        .map_err(|e| store_err(format!("manifest {}", m.digest), e))?;
    debug_assert_eq!(d, m.digest);
    Ok(())
}

fn store_err(what: String, e: StoreError) -> RegistryError {
    RegistryError::store(what, std::io::Error::other(e))
}

fn header_str(resp: &Response, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn location(resp: &Response, base: &reqwest::Url) -> Result<reqwest::Url, RegistryError> {
    let loc = header_str(resp, LOCATION).ok_or_else(|| RegistryError::Protocol {
        url: base.to_string(),
        reason: format!("HTTP {} without a Location header", resp.status().as_u16()),
    })?;
    base.join(&loc).map_err(|e| RegistryError::Protocol {
        url: base.to_string(),
        reason: format!("bad Location {loc:?}: {e}"),
    })
}

fn check_digest_header(
    resp: &Response,
    digest: &Digest,
    dest: &Reference,
) -> Result<(), RegistryError> {
    match header_str(resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok()) {
        Some(got) if &got != digest => Err(RegistryError::DigestMismatch {
            what: format!("blob uploaded to {dest}"),
            expected: digest.clone(),
            actual: got,
        }),
        _ => Ok(()),
    }
}

/// `bytes <start>-<end>/<total>` → start.
fn content_range_start(resp: &Response) -> Option<u64> {
    let v = header_str(resp, CONTENT_RANGE)?;
    let range = v.strip_prefix("bytes ")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

fn is_transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Network { .. } => true,
        RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    r: &Reference,
    bytes: &[u8],
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::InvalidManifest {
        reference: r.to_string(),
        reason: e.to_string(),
    })
}

/// The media type of a manifest or index: the `Content-Type` when it names one forge knows,
/// else the document's own `mediaType`, else guessed from its shape (OCI manifests may omit
/// `mediaType`; a config of Docker's type means a Docker manifest).
pub fn detect_media_type(content_type: Option<&str>, bytes: &[u8]) -> Option<String> {
    let header = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    if let Some(h) = &header {
        if media::is_manifest(h) || media::is_index(h) {
            return Some(h.clone());
        }
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
    {
        return Some(mt.to_string());
    }
    if v.get("manifests").is_some() {
        return Some(media::OCI_INDEX.to_string());
    }
    if let Some(config) = v.get("config") {
        let docker = config.get("mediaType").and_then(|m| m.as_str()) == Some(media::DOCKER_CONFIG);
        return Some(
            if docker {
                media::DOCKER_MANIFEST
            } else {
                media::OCI_MANIFEST
            }
            .to_string(),
        );
    }
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Some("application/vnd.docker.distribution.manifest.v1+json".to_string());
    }
    header.filter(|h| !h.is_empty())
}

/// The index entry for a platform: an exact match (including the variant) first, then any
/// compatible one. Entries that are not image manifests (attestations) are ignored.
pub fn select_platform<'a>(index: &'a Index, wanted: &Platform) -> Option<&'a Descriptor> {
    let candidates: Vec<(&Descriptor, &Platform)> = index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type))
        .filter_map(|d| d.platform.as_ref().map(|p| (d, p)))
        .filter(|(_, p)| wanted.matches(p))
        .collect();
    candidates
        .iter()
        .find(|(_, p)| p.variant == wanted.variant)
        .or_else(|| candidates.first())
        .map(|(d, _)| *d)
}

fn available_platforms(index: &Index) -> Vec<String> {
    let mut v: Vec<String> = index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type))
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, mt: &str, n: u8) -> Descriptor {
        let mut d = Descriptor::new(mt, Digest::of(&[n]), 1);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: if arch == "unknown" {
                "unknown".into()
            } else {
                "linux".into()
            },
            os_version: None,
            os_features: None,
            variant: variant.map(str::to_string),
        });
        d
    }

    #[test]
    fn platform_selection() {
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: vec![
                desc("unknown", None, media::OCI_MANIFEST, 0),
                desc("amd64", None, media::OCI_MANIFEST, 1),
                desc("arm", Some("v6"), media::OCI_MANIFEST, 2),
                desc("arm", Some("v7"), media::OCI_MANIFEST, 3),
                desc("arm64", None, media::OCI_MANIFEST, 4),
                desc("s390x", None, "application/vnd.in-toto+json", 5),
            ],
            annotations: None,
        };
        let pick = |p: &str| {
            select_platform(&index, &Platform::parse(p).unwrap()).map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/amd64"), Some(Digest::of(&[1])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(&[3])));
        assert_eq!(pick("linux/arm/v6"), Some(Digest::of(&[2])));
        assert_eq!(
            pick("linux/arm64"),
            Some(Digest::of(&[4])),
            "arm64 without variant is v8"
        );
        assert_eq!(pick("linux/s390x"), None, "not an image manifest");
        assert_eq!(pick("linux/ppc64le"), None);
        assert_eq!(
            available_platforms(&index),
            ["linux/amd64", "linux/arm/v6", "linux/arm/v7", "linux/arm64"]
        );
    }

    #[test]
    fn media_type_detection() {
        let oci_manifest = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[]}"#;
        let docker_manifest = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json"},"layers":[]}"#;
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        let table: &[(Option<&str>, &[u8], Option<&str>)] = &[
            (
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                b"{}",
                Some(media::OCI_MANIFEST),
            ),
            (
                Some("application/json"),
                oci_manifest,
                Some(media::OCI_MANIFEST),
            ),
            (None, docker_manifest, Some(media::DOCKER_MANIFEST)),
            (Some("text/plain"), index, Some(media::OCI_INDEX)),
            (None, list, Some(media::DOCKER_MANIFEST_LIST)),
            (
                None,
                br#"{"schemaVersion":1}"#,
                Some("application/vnd.docker.distribution.manifest.v1+json"),
            ),
            (None, b"not json", None),
        ];
        for (header, body, want) in table {
            assert_eq!(
                detect_media_type(*header, body).as_deref(),
                *want,
                "{header:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
