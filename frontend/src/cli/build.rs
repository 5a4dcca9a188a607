//! `forge build`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use forge::{Build, CacheSpec, Event, NamedContext, Output};
use forge_parser::NetworkMode;

use super::progress::{Plain, ProgressMode, Tty};
use super::{Failure, LogLevel};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build context directory, or - for a tar on stdin
    #[arg(value_name = "CONTEXT")]
    pub context: String,
    /// Name the image NAME[:TAG] in the store (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Dockerfile path [default: CONTEXT/Dockerfile]; - reads stdin
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,
    /// Set a build-time variable; KEY alone takes the value from the environment (repeatable)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Build this stage instead of the last one
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use the cache
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for this stage (repeatable)
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Check registries for newer base images
    #[arg(long)]
    pub pull: bool,
    /// Add a label to the image (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Target platform
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Network for RUN steps
    #[arg(long, value_name = "MODE", default_value = "default", value_parser = ["default", "host", "none"])]
    pub network: String,
    /// Expose a secret to RUN --mount=type=secret (repeatable)
    #[arg(long = "secret", value_name = "id=ID[,src=PATH|,env=VAR]")]
    pub secrets: Vec<String>,
    /// Forward an ssh agent to RUN --mount=type=ssh (repeatable)
    #[arg(long = "ssh", value_name = "default[=SOCKET]")]
    pub ssh: Vec<String>,
    /// Extra named context: NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://PATH[:TAG]
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Progress output
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the image id
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image id to this file
    #[arg(long, value_name = "PATH")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digests, tags, pushed refs) as JSON to this file
    #[arg(long = "metadata-file", value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
    /// Output: type=oci|docker|image|local|tar,... (repeatable)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Push every -t tag after the build
    #[arg(long)]
    pub push: bool,
    /// Import build cache: type=registry,ref=REF or type=local,src=DIR (repeatable)
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export build cache: type=registry,ref=REF[,mode=min|max] or type=local,dest=DIR
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Say why each step missed the cache
    #[arg(long)]
    pub explain: bool,
    /// Allow an entitlement: security.insecure
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Reach this registry over plain HTTP (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

fn split_kv(s: &str, what: &str) -> Result<(String, String), Failure> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| Failure::usage(format!("{what} {s:?}: expected KEY=VALUE")))
}

pub fn run(root: Option<PathBuf>, a: BuildArgs, level: LogLevel) -> Result<ExitCode, Failure> {
    // The context: a directory, or a tar read from stdin into a temporary directory.
    let mut _stdin_ctx = None;
    let context = if a.context == "-" {
        if a.file.as_deref() == Some("-") {
            return Err(Failure::usage("the context and the Dockerfile cannot both come from stdin"));
        }
        let dir = tempfile::tempdir().map_err(|e| Failure::failed(format!("cannot create a temporary directory: {e}")))?;
        let opts = forge_oci::apply::ApplyOptions::new(forge_oci::apply::ApplyMode::Merged);
        forge_oci::apply::apply_layer(std::io::stdin().lock(), dir.path(), &opts)
            .map_err(|e| Failure::usage(format!("reading the build context tar from stdin: {e}")))?;
        let p = dir.path().to_path_buf();
        _stdin_ctx = Some(dir);
        p
    } else {
        PathBuf::from(&a.context)
    };
    let root_dir = root.clone().unwrap_or_else(forge::default_root);
    let mut b = Build::new(&context).root(root_dir.clone());
    let (df_display, df_text) = match a.file.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::usage(format!("reading the Dockerfile from stdin: {e}")))?;
            b = b.dockerfile_text(s.clone());
            ("<stdin>".to_string(), Some(s))
        }
        Some(p) => {
            b = b.dockerfile(p);
            (p.to_string(), std::fs::read_to_string(p).ok())
        }
        None => {
            let p = context.join("Dockerfile");
            (p.display().to_string(), std::fs::read_to_string(&p).ok())
        }
    };
    for t in &a.tags {
        b = b.tag(t);
    }
    for ba in &a.build_args {
        match ba.split_once('=') {
            Some((k, v)) => b = b.build_arg(k, v),
            None => {
                if let Ok(v) = std::env::var(ba) {
                    b = b.build_arg(ba, v);
                }
            }
        }
    }
    if let Some(t) = &a.target {
        b = b.target(t);
    }
    b = b.no_cache(a.no_cache).pull(a.pull).push(a.push).explain(a.explain);
    for f in &a.no_cache_filter {
        b = b.no_cache_filter(f);
    }
    for l in &a.labels {
        let (k, v) = split_kv(l, "--label")?;
        b = b.label(k, v);
    }
    if let Some(p) = &a.platform {
        b = b.platform(p);
    }
    b = b.network(match a.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        _ => NetworkMode::Default,
    });
    for s in &a.secrets {
        let (id, bytes) = forge::read_secret_spec(s).map_err(Failure::from)?;
        b = b.secret(id, bytes);
    }
    for s in &a.ssh {
        let (id, sock) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| Failure::usage(format!("--ssh {s}: SSH_AUTH_SOCK is not set")))?;
                (s.to_string(), PathBuf::from(sock))
            }
        };
        b = b.ssh(id, sock);
    }
    // An oci-layout:// context is imported into the store (untagged) before the build starts:
    // hold a lease from the import until the build ends, or a concurrent `forge prune` could
    // remove the imported image in between.
    let _import_lease = match a.build_contexts.iter().any(|c| c.contains("=oci-layout://")) {
        true => Some(forge_cache::Store::open(&root_dir).map_err(Failure::from)?.lease().map_err(Failure::from)?),
        false => None,
    };
    for c in &a.build_contexts {
        let (name, value) = split_kv(c, "--build-context")?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(p) = value.strip_prefix("oci-layout://") {
            NamedContext::Image(super::commands::import_oci_layout(&root_dir, p)?)
        } else if value.contains("://") {
            return Err(Failure::usage(format!("--build-context {c}: unsupported source (use a directory, docker-image:// or oci-layout://)")));
        } else {
            NamedContext::Dir(PathBuf::from(value))
        };
        b = b.build_context(name, ctx);
    }
    for o in &a.outputs {
        b = b.output(Output::parse(o).map_err(Failure::from)?);
        // type=oci/docker keep no compression themselves: it applies to the build's layers.
        if let Some(c) = Output::spec_compression(o).map_err(Failure::from)? {
            b = b.compression(c);
        }
    }
    for c in &a.cache_from {
        b = b.cache_from(CacheSpec::parse(c).map_err(Failure::from)?);
    }
    for c in &a.cache_to {
        b = b.cache_to(CacheSpec::parse(c).map_err(Failure::from)?);
    }
    for e in &a.allow {
        match e.as_str() {
            "security.insecure" => b = b.allow_insecure(true),
            other => return Err(Failure::usage(format!("--allow {other}: unknown entitlement (expected security.insecure)"))),
        }
    }
    for r in &a.insecure_registries {
        b = b.insecure_registry(r);
    }

    let mode = if a.quiet { ProgressMode::Quiet } else { a.progress.resolve() };
    // --log-level debug also says why steps missed the cache.
    let explain = a.explain || level >= LogLevel::Debug;
    if explain {
        b = b.explain(true);
    }
    if level >= LogLevel::Debug {
        eprintln!("forge: store {}, context {}", root_dir.display(), context.display());
    }
    let warnings = level >= LogLevel::Warn;
    b = match mode {
        ProgressMode::Plain => {
            let p = Arc::new(Plain::new(explain));
            b.on_event(move |e: Event| {
                if warnings || !matches!(e, Event::Warning { .. }) {
                    p.handle(&e)
                }
            })
        }
        ProgressMode::Tty => {
            let t = Arc::new(Tty::new(explain));
            b.on_event(move |e: Event| {
                if warnings || !matches!(e, Event::Warning { .. }) {
                    t.handle(&e)
                }
            })
        }
        _ => b,
    };
    let result = b.run().map_err(|e| Failure::from_error(e, df_text.as_deref().map(|t| (df_display.as_str(), t))))?;

    let image_id = result.config_digest.to_string();
    if let Some(p) = &a.iidfile {
        std::fs::write(p, &image_id).map_err(|e| Failure::failed(format!("writing {}: {e}", p.display())))?;
    }
    if let Some(p) = &a.metadata_file {
        let meta = serde_json::json!({
            "containerimage.digest": result.manifest_digest.to_string(),
            "containerimage.config.digest": result.config_digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": forge_oci::media::OCI_MANIFEST,
                "digest": result.manifest_digest.to_string(),
            },
            "image.name": result.tags.join(","),
            "forge.pushed": result.pushed,
        });
        let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
        std::fs::write(p, text).map_err(|e| Failure::failed(format!("writing {}: {e}", p.display())))?;
    }
    if a.quiet {
        println!("{image_id}");
    } else if mode != ProgressMode::Quiet && level >= LogLevel::Warn {
        eprintln!(
            "built {} ({} steps ran, {} cached){}",
            result.manifest_digest,
            result.steps_run,
            result.steps_cached,
            if result.tags.is_empty() { String::new() } else { format!(" as {}", result.tags.join(", ")) }
        );
        for p in &result.pushed {
            eprintln!("pushed {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
