//! Build-level resolution: ARG/ENV scoping and stage selection, as BuildKit's dockerfile2llb
//! does it, before anything runs.
//!
//! [`resolve`] takes a parsed [`Dockerfile`] and the [`BuildOptions`] and decides:
//!
//! * the *global* arguments: BuildKit's built-in platform arguments (`TARGETPLATFORM`,
//!   `BUILDARCH`, …, see [`builtin_args`]) followed by the `ARG`s before the first `FROM`,
//!   where `--build-arg` values replace defaults and defaults are expanded in order;
//! * for each stage, its expanded base name and `--platform`, and whether the base is
//!   `scratch`, an image, or an earlier stage (matched by its exact `AS` name);
//! * the stages each stage needs: `COPY --from` and `RUN --mount=from=` by name (any case) or,
//!   for `COPY`, by index; names that are not stages are images;
//! * the target (`--target`, matched case-insensitively, with a "did you mean" hint; the last
//!   stage by default) and the stages reachable from it. Unreachable stages are never built.
//!   Circular `--from` references are errors, and so is a reachable stage that copies from a
//!   stage defined after it.
//!
//! [`StageScope`] then tracks, step by step inside one stage, what BuildKit's dispatcher
//! tracks: declared ARGs (a `--build-arg` wins over the default, an ARG without a default
//! inherits the global value), ENV values, the environment a step expands words against and
//! runs with, and the ARG values that go into a RUN's history line and cache key.
//!
//! ```
//! use std::collections::BTreeMap;
//! use forge_parser::resolve::{BuildOptions, PlatformSpec, StageScope};
//!
//! let opts = BuildOptions {
//!     build_args: BTreeMap::from([("VERSION".to_string(), "2.0".to_string())]),
//!     target_platform: PlatformSpec::parse("linux/arm64").unwrap(),
//!     ..BuildOptions::default()
//! };
//! let mut scope = StageScope::new('\\', &[], opts.build_args.clone(), &["PATH=/bin".to_string()]);
//! scope.declare_arg("VERSION", Some("1.0")).unwrap();
//! scope.declare_arg("DIR", Some("/opt/app-$VERSION")).unwrap();
//! scope.set_env(&[("HOME".to_string(), "$DIR".to_string())]).unwrap();
//! assert_eq!(scope.get("HOME"), Some("/opt/app-2.0"));
//! assert_eq!(scope.run_args(), [("VERSION".to_string(), "2.0".to_string()),
//!                               ("DIR".to_string(), "/opt/app-2.0".to_string())]);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::convert::values::format_go_duration;
use crate::instructions::{Dockerfile, Healthcheck, InstructionKind};
use crate::shell::{EnvLookup, ExpandError, Lexer};
use crate::span::Span;

/// The arguments every build has without declaring them globally: proxies. Inside a stage they
/// are passed to RUN without being declared, and they are kept out of history and cache keys.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// ARGs that never become environment variables of a step.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// An `os/arch[/variant]` platform, normalized like containerd does (`aarch64` → `arm64`,
/// `x86_64` → `amd64`, `armhf` → `arm/v7`, `arm64/v8` → `arm64`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlatformSpec {
    pub os: String,
    pub arch: String,
    /// Empty when there is none.
    pub variant: String,
}

/// A platform string that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: {reason}")]
pub struct PlatformError {
    pub value: String,
    pub reason: String,
}

impl PlatformSpec {
    pub fn new(os: &str, arch: &str, variant: &str) -> PlatformSpec {
        let (arch, variant) =
            normalize_arch(&arch.to_ascii_lowercase(), &variant.to_ascii_lowercase());
        PlatformSpec {
            os: normalize_os(&os.to_ascii_lowercase()),
            arch,
            variant,
        }
    }

    /// The platform this program runs on.
    pub fn host() -> PlatformSpec {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        PlatformSpec::new(std::env::consts::OS, arch, "")
    }

    /// Parses `os`, `arch`, `os/arch` or `os/arch/variant`. A lone architecture gets the host
    /// OS; a lone OS gets the host architecture.
    pub fn parse(value: &str) -> Result<PlatformSpec, PlatformError> {
        let err = |reason: &str| PlatformError {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let lower = value.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(err("invalid platform component"));
        }
        let host = PlatformSpec::host();
        match parts.as_slice() {
            [one] => {
                if is_known_os(&normalize_os(one)) {
                    Ok(PlatformSpec {
                        os: normalize_os(one),
                        arch: host.arch,
                        variant: host.variant,
                    })
                } else if is_known_arch(one) {
                    Ok(PlatformSpec::new(&host.os, one, ""))
                } else {
                    Err(err(
                        "unknown operating system or architecture: invalid argument",
                    ))
                }
            }
            [os, arch] => Ok(PlatformSpec::new(os, arch, "")),
            [os, arch, variant] => Ok(PlatformSpec::new(os, arch, variant)),
            _ => Err(err("cannot parse platform: too many components")),
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn normalize_os(os: &str) -> String {
    match os {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "wasip1"
            | "windows"
            | "zos"
    )
}

fn is_known_arch(arch: &str) -> bool {
    let (a, _) = normalize_arch(arch, "");
    matches!(
        a.as_str(),
        "386"
            | "amd64"
            | "arm"
            | "arm64"
            | "loong64"
            | "mips"
            | "mips64"
            | "mips64le"
            | "mipsle"
            | "ppc64"
            | "ppc64le"
            | "riscv64"
            | "s390x"
            | "wasm"
    )
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match arch {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { variant }),
        "aarch64" | "arm64" => (
            "arm64",
            if matches!(variant, "8" | "v8") {
                ""
            } else {
                variant
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant {
                "" | "7" => "v7",
                "5" | "6" | "8" => return ("arm".to_string(), format!("v{variant}")),
                v => v,
            },
        ),
        other => (other, variant),
    };
    (a.to_string(), v.to_string())
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg NAME=VALUE`, used verbatim (never expanded).
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name (any case). `None` builds the last stage.
    pub target: Option<String>,
    pub target_platform: PlatformSpec,
    pub build_platform: PlatformSpec,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: PlatformSpec::host(),
            build_platform: PlatformSpec::host(),
        }
    }
}

/// BuildKit's automatic platform arguments, in its order. They are global (usable in `FROM`)
/// and can be brought into a stage with a bare `ARG TARGETARCH`.
pub fn builtin_args(target: &PlatformSpec, build: &PlatformSpec) -> Vec<(String, String)> {
    [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build.arch.clone()),
        ("BUILDVARIANT", build.variant.clone()),
        ("TARGETPLATFORM", target.to_string()),
        ("TARGETOS", target.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target.arch.clone()),
        ("TARGETVARIANT", target.variant.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The proxy settings a RUN gets from `--build-arg`s named like a proxy variable (any case),
/// as `UPPER` and `lower` pairs. Later names in sorted order win, as in BuildKit.
pub fn proxy_env(build_args: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in build_args {
        for kind in [
            "http_proxy",
            "https_proxy",
            "ftp_proxy",
            "no_proxy",
            "all_proxy",
        ] {
            if k.eq_ignore_ascii_case(kind) {
                found.insert(kind, v);
            }
        }
    }
    let mut out = Vec::new();
    for kind in [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
        "all_proxy",
    ] {
        if let Some(v) = found.get(kind) {
            out.push((kind.to_ascii_uppercase(), v.to_string()));
            out.push((kind.to_string(), v.to_string()));
        }
    }
    out
}

/// Sets `key` in an image's ordered `KEY=VALUE` list: the first entry with that key (an entry
/// without `=` is a bare key) is replaced, otherwise the pair is appended.
pub fn add_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| parse_key_value(e).0 == key) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// The `PATH` BuildKit gives a non-Windows stage whose base image config sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Adds `PATH=`[`DEFAULT_PATH`] to an image config `Env` that lacks it, as BuildKit does for
/// every stage before its first step (not for Windows images). Do this before building the
/// stage's [`StageScope`], so steps see the same `PATH` the image will record.
pub fn ensure_default_path(env: &mut Vec<String>, os: &str) {
    if os != "windows" && !env.iter().any(|e| parse_key_value(e).0 == "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
}

/// Splits `KEY=VALUE` at the first `=`; a string without `=` is a key with an empty value.
pub fn parse_key_value(entry: &str) -> (&str, &str) {
    entry.split_once('=').unwrap_or((entry, ""))
}

/// The image-history `created_by` text BuildKit records for a HEALTHCHECK: Go's `%+v` of the
/// health config, durations in Go's notation (`HEALTHCHECK {Test:[CMD-SHELL curl -f x]
/// Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}`).
pub fn healthcheck_history(health: &Healthcheck) -> String {
    let (test, times, retries) = match health {
        Healthcheck::None => (vec!["NONE".to_string()], [None; 4], None),
        Healthcheck::Check {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => (
            test.clone(),
            [*interval, *timeout, *start_period, *start_interval],
            *retries,
        ),
    };
    let [interval, timeout, start_period, start_interval] =
        times.map(|t| format_go_duration(t.unwrap_or(0)));
    format!(
        "HEALTHCHECK {{Test:[{}] Interval:{interval} Timeout:{timeout} StartPeriod:{start_period} StartInterval:{start_interval} Retries:{}}}",
        test.join(" "),
        retries.unwrap_or(0)
    )
}

/// Why a build cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("dockerfile contains no stages to build")]
    NoStages,
    #[error("{error}")]
    Expand { error: ExpandError, span: Span },
    #[error("base name ({base}) should not be blank")]
    BlankBase { base: String, span: Span },
    #[error("empty platform value from expression {expression}")]
    BlankPlatform { expression: String, span: Span },
    #[error("failed to parse platform {expression}: {error}")]
    InvalidPlatform {
        expression: String,
        error: PlatformError,
        span: Span,
    },
    #[error("target stage {target:?} could not be found{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownTarget {
        target: String,
        suggestion: Option<String>,
    },
    #[error(
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    )]
    FromExpansion { span: Span },
    #[error("invalid stage index {index}")]
    InvalidStageIndex { index: String, span: Span },
    #[error("circular dependency detected on stage: {stage}")]
    CircularDependency { stage: String, span: Option<Span> },
    #[error(
        "cannot copy from stage {from:?}, it needs to be defined before current stage {stage:?}"
    )]
    CopyFromLaterStage {
        from: String,
        stage: String,
        span: Span,
    },
    #[error("cannot mount from stage {from:?} to {stage:?}, stage needs to be defined before current command")]
    MountFromLaterStage {
        from: String,
        stage: String,
        span: Span,
    },
    #[error("source can't be a URL for COPY")]
    CopyFromUrl { span: Span },
    #[error("invalid ONBUILD trigger inherited from the base stage: {message}")]
    OnBuildTrigger { message: String, span: Span },
}

impl ResolveError {
    /// Where in the Dockerfile the problem is, when it has a place.
    pub fn span(&self) -> Option<Span> {
        match self {
            ResolveError::NoStages | ResolveError::UnknownTarget { .. } => None,
            ResolveError::Expand { span, .. }
            | ResolveError::BlankBase { span, .. }
            | ResolveError::BlankPlatform { span, .. }
            | ResolveError::InvalidPlatform { span, .. }
            | ResolveError::FromExpansion { span }
            | ResolveError::InvalidStageIndex { span, .. }
            | ResolveError::CopyFromLaterStage { span, .. }
            | ResolveError::MountFromLaterStage { span, .. }
            | ResolveError::CopyFromUrl { span }
            | ResolveError::OnBuildTrigger { span, .. } => Some(*span),
            ResolveError::CircularDependency { span, .. } => *span,
        }
    }
}

/// What a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageBase {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference (as expanded; not yet normalized).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Something a step reads from outside its own stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DependencyKind {
    /// `COPY --from=…`
    CopyFrom,
    /// `RUN --mount=…,from=…`
    MountFrom,
}

/// One `--from` reference of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub source: Source,
    pub kind: DependencyKind,
    /// Index of the instruction in the stage (in the base stage when `onbuild`).
    pub instruction: usize,
    /// The reference comes from an `ONBUILD` trigger of the base stage, which runs at the
    /// start of this stage.
    pub onbuild: bool,
    pub span: Span,
}

/// One stage after resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedStage {
    pub index: usize,
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    /// The name used in messages and progress: the `AS` name, or `stage-<index>`.
    pub display_name: String,
    /// The base name after expansion with the global args.
    pub base_name: String,
    pub base: StageBase,
    /// The expanded `--platform`, if given.
    pub platform: Option<PlatformSpec>,
    pub dependencies: Vec<Dependency>,
    /// The `FROM` line.
    pub span: Span,
}

impl ResolvedStage {
    /// Stages this one needs: its base stage and every stage it copies or mounts from.
    pub fn stage_dependencies(&self) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        if let StageBase::Stage(b) = self.base {
            out.insert(b);
        }
        for d in &self.dependencies {
            if let Source::Stage(s) = d.source {
                out.insert(s);
            }
        }
        out
    }
}

/// The outcome of [`resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBuild {
    pub stages: Vec<ResolvedStage>,
    /// The stage whose result is the build's result.
    pub target: usize,
    /// The target and every stage it needs, directly or not.
    pub reachable: BTreeSet<usize>,
    /// The reachable stages in the order to build them (dependencies first: index order).
    pub build_order: Vec<usize>,
    /// Global arguments: built-ins (with `--build-arg` overrides and `TARGETSTAGE`) then the
    /// meta ARGs, in order. What `FROM` lines expand against.
    pub global_args: Vec<(String, String)>,
    /// Images the reachable stages need: bases and `--from` images, first use first.
    pub images: Vec<String>,
    /// `--build-arg`s no reachable ARG (or built-in/proxy name) consumes.
    pub unused_build_args: Vec<String>,
    /// The build args, kept for [`StageScope`].
    pub build_args: BTreeMap<String, String>,
    /// The Dockerfile's escape character.
    pub escape: char,
}

impl ResolvedBuild {
    /// A fresh scope for a stage whose base is an image (or scratch) with this config `Env`.
    pub fn scope_for_image(&self, image_env: &[String]) -> StageScope {
        StageScope::new(
            self.escape,
            &self.global_args,
            self.build_args.clone(),
            image_env,
        )
    }
}

/// An ordered environment where setting a name replaces its value in place.
fn add_or_replace(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

/// Resolves stages, global arguments and the target. See the module documentation.
pub fn resolve(df: &Dockerfile, opts: &BuildOptions) -> Result<ResolvedBuild, ResolveError> {
    if df.stages.is_empty() {
        return Err(ResolveError::NoStages);
    }
    let r = Resolver {
        df,
        opts,
        lex: Lexer::new(df.directives.escape),
    };
    let global = r.global_args()?;
    let (mut stages, by_name) = r.stage_heads(&global)?;
    let target = r.target(&stages, &by_name)?;
    let trigger_errors = r.add_dependencies(&mut stages, &by_name)?;
    check_cycles(&stages)?;
    let reachable = reachable_from(&stages, target);
    if let Some(err) = reachable.iter().find_map(|&s| trigger_errors[s].clone()) {
        return Err(err);
    }
    check_dispatch_order(&stages, &reachable)?;
    check_copy_sources(df, &reachable)?;
    let build_order: Vec<usize> = reachable.iter().copied().collect();
    Ok(ResolvedBuild {
        images: needed_images(&stages, &build_order),
        unused_build_args: r.unused_build_args(&global, &build_order),
        stages,
        target,
        reachable,
        build_order,
        global_args: global,
        build_args: opts.build_args.clone(),
        escape: df.directives.escape,
    })
}

/// The steps of [`resolve`], sharing the inputs.
struct Resolver<'a> {
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    lex: Lexer,
}

impl Resolver<'_> {
    /// Expands a word against `env`, attributing a failure to `span`.
    fn expand(
        &self,
        word: &str,
        env: &[(String, String)],
        span: Span,
    ) -> Result<String, ResolveError> {
        self.lex
            .process_word(word, &env)
            .map_err(|error| ResolveError::Expand { error, span })
    }

    /// Built-ins (a `--build-arg` may override them), `TARGETSTAGE`, then the meta ARGs in
    /// order: a `--build-arg` replaces the default, a default is expanded against what came
    /// before, an ARG with neither stays unset.
    fn global_args(&self) -> Result<Vec<(String, String)>, ResolveError> {
        let (df, opts) = (self.df, self.opts);
        let target_name = match &opts.target {
            Some(t) if !t.is_empty() => t.clone(),
            _ => df
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
        };
        let mut global = Vec::new();
        let mut builtins = builtin_args(&opts.target_platform, &opts.build_platform);
        builtins.push(("TARGETSTAGE".to_string(), target_name));
        for (k, v) in builtins {
            let v = opts.build_args.get(&k).cloned().unwrap_or(v);
            add_or_replace(&mut global, &k, &v);
        }
        for cmd in &df.meta_args {
            for arg in &cmd.args {
                let value = match (opts.build_args.get(&arg.name), &arg.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => Some(self.expand(d, &global, cmd.span)?),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    add_or_replace(&mut global, &arg.name, &v);
                }
            }
        }
        Ok(global)
    }

    /// Each stage's base and platform, expanded against the global args only, and the index
    /// of stage names (lower-case).
    fn stage_heads(
        &self,
        global: &[(String, String)],
    ) -> Result<(Vec<ResolvedStage>, BTreeMap<String, usize>), ResolveError> {
        let mut stages = Vec::with_capacity(self.df.stages.len());
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, st) in self.df.stages.iter().enumerate() {
            let base_name = self.expand(&st.base, global, st.span)?;
            if base_name.is_empty() {
                return Err(ResolveError::BlankBase {
                    base: st.base.clone(),
                    span: st.span,
                });
            }
            let platform = match &st.platform {
                None => None,
                Some(expr) => {
                    let v = self.expand(expr, global, st.span)?;
                    if v.is_empty() {
                        return Err(ResolveError::BlankPlatform {
                            expression: expr.clone(),
                            span: st.span,
                        });
                    }
                    let parsed = PlatformSpec::parse(&v);
                    Some(parsed.map_err(|error| ResolveError::InvalidPlatform {
                        expression: expr.clone(),
                        error,
                        span: st.span,
                    })?)
                }
            };
            // Only earlier stages count, and the name must match exactly (names are lower-case).
            let base = match by_name.get(&base_name) {
                Some(&b) => StageBase::Stage(b),
                None if base_name == "scratch" => StageBase::Scratch,
                None => StageBase::Image(base_name.clone()),
            };
            let name = st.name.as_ref().map(|n| n.to_lowercase());
            if let Some(n) = &name {
                by_name.insert(n.clone(), i);
            }
            stages.push(ResolvedStage {
                index: i,
                display_name: name.clone().unwrap_or_else(|| format!("stage-{i}")),
                name,
                base_name,
                base,
                platform,
                dependencies: Vec::new(),
                span: st.span,
            });
        }
        Ok((stages, by_name))
    }

    /// `--target` (any case), or the last stage.
    fn target(
        &self,
        stages: &[ResolvedStage],
        by_name: &BTreeMap<String, usize>,
    ) -> Result<usize, ResolveError> {
        let Some(t) = self.opts.target.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(stages.len() - 1);
        };
        by_name.get(&t.to_lowercase()).copied().ok_or_else(|| {
            let names: Vec<&str> = stages.iter().map(|s| s.display_name.as_str()).collect();
            ResolveError::UnknownTarget {
                target: t.to_string(),
                suggestion: suggest(t, &names),
            }
        })
    }

    /// The `--from` references of one instruction. COPY takes a literal stage name (any case),
    /// a stage index, or an image; a RUN mount takes a stage name or an image.
    fn references(
        &self,
        kind: &InstructionKind,
        span: Span,
        stage_count: usize,
        by_name: &BTreeMap<String, usize>,
    ) -> Result<Vec<(Source, DependencyKind)>, ResolveError> {
        let by_name_or_image = |from: &str| match by_name.get(&from.to_lowercase()) {
            Some(&s) => Source::Stage(s),
            None => Source::Image(from.to_string()),
        };
        let mut out = Vec::new();
        match kind {
            InstructionKind::Copy(c) => {
                if let Some(from) = &c.from {
                    let literal = self.lex.process_word(from, &crate::shell::NoEnv).ok();
                    if literal.as_deref() != Some(from.as_str()) {
                        return Err(ResolveError::FromExpansion { span });
                    }
                    let source = match from.parse::<i64>() {
                        Ok(n) if n < 0 || n as usize >= stage_count => {
                            return Err(ResolveError::InvalidStageIndex {
                                index: n.to_string(),
                                span,
                            });
                        }
                        Ok(n) => Source::Stage(n as usize),
                        Err(_) => by_name_or_image(from),
                    };
                    out.push((source, DependencyKind::CopyFrom));
                }
            }
            InstructionKind::Run(r) => {
                for from in r
                    .mounts
                    .iter()
                    .filter_map(|m| m.from.as_deref())
                    .filter(|f| !f.is_empty())
                {
                    out.push((by_name_or_image(from), DependencyKind::MountFrom));
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Fills in every stage's dependencies: first those of the ONBUILD triggers it inherits
    /// from a base *stage* (they run first in the child), then its own. Returns, per stage, a
    /// trigger that could not be parsed; it only matters if the stage is built.
    fn add_dependencies(
        &self,
        stages: &mut [ResolvedStage],
        by_name: &BTreeMap<String, usize>,
    ) -> Result<Vec<Option<ResolveError>>, ResolveError> {
        let count = stages.len();
        let mut trigger_errors = vec![None; count];
        for (i, st) in self.df.stages.iter().enumerate() {
            let mut deps = Vec::new();
            if let StageBase::Stage(b) = stages[i].base {
                for (j, ins) in self.df.stages[b].instructions.iter().enumerate() {
                    let InstructionKind::Onbuild(o) = &ins.kind else {
                        continue;
                    };
                    match parse_trigger(&o.expression) {
                        Ok(kind) => {
                            for (source, kind) in self.references(&kind, st.span, count, by_name)? {
                                deps.push(Dependency {
                                    source,
                                    kind,
                                    instruction: j,
                                    onbuild: true,
                                    span: st.span,
                                });
                            }
                        }
                        Err(message) => {
                            trigger_errors[i].get_or_insert(ResolveError::OnBuildTrigger {
                                message,
                                span: st.span,
                            });
                        }
                    }
                }
            }
            for (j, ins) in st.instructions.iter().enumerate() {
                for (source, kind) in self.references(&ins.kind, ins.span, count, by_name)? {
                    deps.push(Dependency {
                        source,
                        kind,
                        instruction: j,
                        onbuild: false,
                        span: ins.span,
                    });
                }
            }
            stages[i].dependencies = deps;
        }
        Ok(trigger_errors)
    }

    /// `--build-arg`s that nothing consumes: not a meta ARG, not an ARG of a stage that is
    /// built, not a built-in or proxy name, not one of BuildKit's own options.
    fn unused_build_args(&self, global: &[(String, String)], build_order: &[usize]) -> Vec<String> {
        let mut consumed: BTreeSet<&str> = global.iter().map(|(k, _)| k.as_str()).collect();
        for cmd in &self.df.meta_args {
            consumed.extend(cmd.args.iter().map(|a| a.name.as_str()));
        }
        for &s in build_order {
            for ins in &self.df.stages[s].instructions {
                if let InstructionKind::Arg(defs) = &ins.kind {
                    consumed.extend(defs.iter().map(|d| d.name.as_str()));
                }
            }
        }
        self.opts
            .build_args
            .keys()
            .filter(|k| {
                !consumed.contains(k.as_str())
                    && k.as_str() != "SOURCE_DATE_EPOCH"
                    && !k.starts_with("BUILDKIT_")
                    && !PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k))
            })
            .cloned()
            .collect()
    }
}

/// Parses an ONBUILD trigger on its own, as BuildKit does when a child stage runs it (with
/// the default escape character).
fn parse_trigger(expression: &str) -> Result<InstructionKind, String> {
    let df = crate::parse_dockerfile(&format!("FROM scratch\n{expression}\n"))
        .map_err(|e| e.diagnostic.message)?;
    match df.stages.into_iter().next().map(|s| s.instructions) {
        Some(mut v) if v.len() == 1 => Ok(v.remove(0).kind),
        _ => Err("onbuild trigger should be a single expression".to_string()),
    }
}

/// The target and everything it needs, directly or not.
fn reachable_from(stages: &[ResolvedStage], target: usize) -> BTreeSet<usize> {
    let mut reachable = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(s) = todo.pop() {
        if reachable.insert(s) {
            todo.extend(stages[s].stage_dependencies());
        }
    }
    reachable
}

/// Stages are built in file order, so a built stage's `--from` must point backwards.
fn check_dispatch_order(
    stages: &[ResolvedStage],
    reachable: &BTreeSet<usize>,
) -> Result<(), ResolveError> {
    for &s in reachable {
        for d in &stages[s].dependencies {
            let Source::Stage(from) = d.source else {
                continue;
            };
            if from < s {
                continue;
            }
            let (from, stage, span) = (
                stages[from].display_name.clone(),
                stages[s].display_name.clone(),
                d.span,
            );
            return Err(match d.kind {
                DependencyKind::CopyFrom => ResolveError::CopyFromLaterStage { from, stage, span },
                DependencyKind::MountFrom => {
                    ResolveError::MountFromLaterStage { from, stage, span }
                }
            });
        }
    }
    Ok(())
}

/// COPY never fetches URLs (ADD does). Sources holding `$VAR`s can only be checked once
/// expanded, by the caller.
fn check_copy_sources(df: &Dockerfile, reachable: &BTreeSet<usize>) -> Result<(), ResolveError> {
    for &s in reachable {
        for ins in &df.stages[s].instructions {
            let InstructionKind::Copy(c) = &ins.kind else {
                continue;
            };
            if c.common
                .sources
                .iter()
                .any(|src| src.starts_with("http://") || src.starts_with("https://"))
            {
                return Err(ResolveError::CopyFromUrl { span: ins.span });
            }
        }
    }
    Ok(())
}

/// Images the built stages need (bases and `--from` images), first use first, once each.
fn needed_images(stages: &[ResolvedStage], build_order: &[usize]) -> Vec<String> {
    let mut images: Vec<String> = Vec::new();
    for &s in build_order {
        let st = &stages[s];
        let base = match &st.base {
            StageBase::Image(name) => Some(name),
            _ => None,
        };
        let froms = st.dependencies.iter().filter_map(|d| match &d.source {
            Source::Image(name) => Some(name),
            Source::Stage(_) => None,
        });
        for name in base.into_iter().chain(froms) {
            if !images.contains(name) {
                images.push(name.clone());
            }
        }
    }
    images
}

/// Depth-first search over `--from` edges; names the stage the search started from, as
/// BuildKit does.
fn check_cycles(stages: &[ResolvedStage]) -> Result<(), ResolveError> {
    fn visit(
        stages: &[ResolvedStage],
        s: usize,
        visited: &mut [bool],
        on_path: &mut [bool],
        first: Option<Span>,
    ) -> Option<Option<Span>> {
        if visited[s] {
            return None;
        }
        visited[s] = true;
        on_path[s] = true;
        for d in &stages[s].dependencies {
            let Source::Stage(next) = d.source else {
                continue;
            };
            let first = first.or(Some(d.span));
            if on_path[next] {
                return Some(first);
            }
            if let Some(found) = visit(stages, next, visited, on_path, first) {
                return Some(found);
            }
        }
        on_path[s] = false;
        None
    }
    let mut visited = vec![false; stages.len()];
    let mut on_path = vec![false; stages.len()];
    for s in 0..stages.len() {
        if let Some(span) = visit(stages, s, &mut visited, &mut on_path, None) {
            return Err(ResolveError::CircularDependency {
                stage: stages[s].display_name.clone(),
                span,
            });
        }
    }
    Ok(())
}

/// The closest option within edit distance 2 (case-sensitive), BuildKit's "did you mean".
/// An exact match means the value was fine and gives no suggestion.
pub fn suggest(value: &str, options: &[&str]) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for opt in options {
        if *opt == value {
            return None;
        }
        let d = levenshtein(value, opt);
        if d < best.map_or(3, |b| b.0) {
            best = Some((d, opt));
        }
    }
    best.map(|(_, o)| o.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The variables of one stage as its steps run, following BuildKit's dispatcher.
///
/// * [`StageScope::declare_arg`]: a `--build-arg` value wins (used verbatim); otherwise the
///   default is expanded against the current environment; an ARG with neither inherits the
///   global value (meta ARG or built-in). An ARG with a value becomes part of the environment.
/// * [`StageScope::set_env`]: ENV pairs, all expanded against the environment as it was before
///   the instruction, then set in order.
/// * The environment is one ordered list where a later definition replaces an earlier one: an
///   ENV after an ARG of the same name shadows it (and so does an ARG after an ENV, as in
///   BuildKit). The image config's `Env` only ever receives ENV values; tracking it is the
///   caller's job (see [`add_env`]).
#[derive(Clone, Debug)]
pub struct StageScope {
    lexer: Lexer,
    global: Vec<(String, String)>,
    build_args: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    args: Vec<(String, Option<String>)>,
}

impl StageScope {
    /// A scope for a stage based on an image (or scratch) whose config `Env` is `image_env`.
    pub fn new(
        escape: char,
        global_args: &[(String, String)],
        build_args: BTreeMap<String, String>,
        image_env: &[String],
    ) -> StageScope {
        let mut env = Vec::new();
        for e in image_env {
            let (k, v) = parse_key_value(e);
            add_or_replace(&mut env, k, v);
        }
        StageScope {
            lexer: Lexer::new(escape),
            global: global_args.to_vec(),
            build_args,
            env,
            args: Vec::new(),
        }
    }

    /// A scope for a stage built `FROM` another stage: it starts with the parent's environment
    /// and declared ARGs.
    pub fn child(&self) -> StageScope {
        self.clone()
    }

    /// The lexer (with the Dockerfile's escape character) to expand words with.
    pub fn lexer(&self) -> &Lexer {
        &self.lexer
    }

    /// Declares `ARG name[=default]`; returns the value it got, if any.
    pub fn declare_arg(
        &mut self,
        name: &str,
        default: Option<&str>,
    ) -> Result<Option<String>, ExpandError> {
        let value = match (self.build_args.get(name), default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(self.lexer.process_word(d, &self.env)?),
            (None, None) => self.global.lookup(name).map(str::to_string),
        };
        if let Some(v) = &value {
            if !NON_ENV_ARGS.contains(&name) {
                add_or_replace(&mut self.env, name, v);
            }
        }
        self.args.push((name.to_string(), value.clone()));
        Ok(value)
    }

    /// Applies `ENV` pairs (raw words): every key and value is expanded against the environment
    /// as it was before the instruction, then set in order. Returns the expanded pairs, for the
    /// image config.
    pub fn set_env(
        &mut self,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ExpandError> {
        let mut out = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            out.push((
                self.lexer.process_word(k, &self.env)?,
                self.lexer.process_word(v, &self.env)?,
            ));
        }
        for (k, v) in &out {
            add_or_replace(&mut self.env, k, v);
        }
        Ok(out)
    }

    /// Applies an `ARG` or `ENV` instruction; other instructions leave the scope unchanged.
    /// Returns the expanded ENV pairs (empty for ARG and the rest).
    pub fn apply(&mut self, kind: &InstructionKind) -> Result<Vec<(String, String)>, ExpandError> {
        match kind {
            InstructionKind::Arg(defs) => {
                for d in defs {
                    self.declare_arg(&d.name, d.default.as_deref())?;
                }
                Ok(Vec::new())
            }
            InstructionKind::Env(kvs) => {
                let pairs: Vec<(String, String)> = kvs
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.clone()))
                    .collect();
                self.set_env(&pairs)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The environment a step expands its words against and runs with, in order.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// One variable of [`StageScope::env`].
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env.lookup(name)
    }

    /// The declared ARGs, in order, with the value each got (`None`: no value).
    pub fn declared_args(&self) -> &[(String, Option<String>)] {
        &self.args
    }

    /// The ARG values a RUN records (history `|N K=V … cmd`, cache key): each declared ARG
    /// once, in order of first declaration, with its current environment value (which an ENV
    /// may have replaced), or its own value, or empty.
    pub fn run_args(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.args {
            let value = self
                .env
                .lookup(k)
                .map(str::to_string)
                .or_else(|| v.clone())
                .unwrap_or_default();
            add_or_replace(&mut out, k, &value);
        }
        out
    }

    /// The text BuildKit puts before a RUN's command in the image history: `|2 A=1 B=2 `
    /// (empty when no ARG is declared).
    pub fn run_history_prefix(&self) -> String {
        let args = self.run_args();
        if args.is_empty() {
            return String::new();
        }
        let mut s = format!("|{}", args.len());
        for (k, v) in args {
            s.push_str(&format!(" {k}={v}"));
        }
        s.push(' ');
        s
    }
}

impl EnvLookup for StageScope {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.env.lookup(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(
        build_args: &[(&str, &str)],
        global: &[(&str, &str)],
        image_env: &[&str],
    ) -> StageScope {
        StageScope::new(
            '\\',
            &global
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
            build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            &image_env.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    /// `platform!(name, input, expected display)`.
    macro_rules! platform {
        ($name:ident, $input:expr, $expected:expr) => {
            #[test]
            fn $name() {
                assert_eq!(
                    PlatformSpec::parse($input)
                        .map(|p| p.to_string())
                        .as_deref(),
                    Ok($expected)
                );
            }
        };
    }

    platform!(platform_plain, "linux/amd64", "linux/amd64");
    platform!(platform_aarch64, "linux/aarch64", "linux/arm64");
    platform!(platform_arm64_v8_dropped, "linux/arm64/v8", "linux/arm64");
    platform!(platform_arm_default_v7, "linux/arm", "linux/arm/v7");
    platform!(platform_arm_v6, "linux/arm/6", "linux/arm/v6");
    platform!(platform_x86_64, "Linux/x86_64", "linux/amd64");
    platform!(platform_darwin, "macos/arm64", "darwin/arm64");

    #[test]
    fn platform_errors() {
        assert!(PlatformSpec::parse("").is_err());
        assert!(PlatformSpec::parse("linux/").is_err());
        assert!(PlatformSpec::parse("a/b/c/d").is_err());
        assert!(PlatformSpec::parse("notanos").is_err());
    }

    /// `suggests!(name, value, [options], expected)`.
    macro_rules! suggests {
        ($name:ident, $value:expr, [$($o:expr),*], $expected:expr) => {
            #[test]
            fn $name() {
                assert_eq!(suggest($value, &[$($o),*]).as_deref(), $expected);
            }
        };
    }

    suggests!(suggest_close, "buidl", ["build", "test"], Some("build"));
    suggests!(suggest_far, "xyz", ["build", "test"], None);
    suggests!(suggest_exact_none, "test", ["build", "test"], None);
    suggests!(suggest_stage_n, "stage-O", ["stage-0"], Some("stage-0"));

    #[test]
    fn build_arg_beats_default_and_is_verbatim() {
        let mut s = scope(&[("V", "$NOT_EXPANDED")], &[], &[]);
        assert_eq!(
            s.declare_arg("V", Some("default")).unwrap().as_deref(),
            Some("$NOT_EXPANDED")
        );
        assert_eq!(s.get("V"), Some("$NOT_EXPANDED"));
    }

    #[test]
    fn defaults_expand_in_order() {
        let mut s = scope(&[], &[], &["BASE=/usr"]);
        s.declare_arg("A", Some("$BASE/lib")).unwrap();
        s.declare_arg("B", Some("${A}64")).unwrap();
        assert_eq!(s.get("B"), Some("/usr/lib64"));
    }

    #[test]
    fn bare_arg_inherits_global_value_only_when_declared() {
        let mut s = scope(&[], &[("VERSION", "1.2"), ("TARGETARCH", "arm64")], &[]);
        assert_eq!(
            s.get("VERSION"),
            None,
            "meta args are not visible inside a stage by default"
        );
        s.declare_arg("VERSION", None).unwrap();
        s.declare_arg("TARGETARCH", None).unwrap();
        assert_eq!(s.get("VERSION"), Some("1.2"));
        assert_eq!(s.get("TARGETARCH"), Some("arm64"));
    }

    #[test]
    fn arg_without_any_value_is_declared_but_unset() {
        let mut s = scope(&[], &[], &[]);
        assert_eq!(s.declare_arg("X", None).unwrap(), None);
        assert_eq!(s.get("X"), None);
        assert_eq!(s.run_args(), [("X".to_string(), String::new())]);
    }

    #[test]
    fn env_after_arg_shadows_it() {
        let mut s = scope(&[("V", "from-arg")], &[], &[]);
        s.declare_arg("V", None).unwrap();
        s.set_env(&[("V".into(), "from-env".into())]).unwrap();
        assert_eq!(s.get("V"), Some("from-env"));
        assert_eq!(s.run_args(), [("V".to_string(), "from-env".to_string())]);
    }

    #[test]
    fn env_pairs_expand_against_previous_environment() {
        let mut s = scope(&[], &[], &["A=old"]);
        let out = s
            .set_env(&[("A".into(), "new".into()), ("B".into(), "$A".into())])
            .unwrap();
        assert_eq!(
            out,
            [
                ("A".to_string(), "new".to_string()),
                ("B".to_string(), "old".to_string())
            ]
        );
    }

    #[test]
    fn run_args_dedupe_and_history_prefix() {
        let mut s = scope(&[], &[], &[]);
        s.declare_arg("A", Some("1")).unwrap();
        s.declare_arg("B", Some("2")).unwrap();
        s.declare_arg("A", Some("3")).unwrap();
        assert_eq!(s.run_history_prefix(), "|2 A=3 B=2 ");
        assert_eq!(scope(&[], &[], &[]).run_history_prefix(), "");
    }

    #[test]
    fn sbom_args_stay_out_of_the_environment() {
        let mut s = scope(&[], &[], &[]);
        s.declare_arg("BUILDKIT_SBOM_SCAN_STAGE", Some("true"))
            .unwrap();
        assert_eq!(s.get("BUILDKIT_SBOM_SCAN_STAGE"), None);
        assert_eq!(s.declared_args().len(), 1);
    }

    #[test]
    fn child_scope_inherits_env_and_args() {
        let mut s = scope(&[], &[], &[]);
        s.declare_arg("A", Some("1")).unwrap();
        let c = s.child();
        assert_eq!(c.get("A"), Some("1"));
        assert_eq!(c.run_args().len(), 1);
    }

    #[test]
    fn default_expansion_error_is_reported() {
        let mut s = scope(&[], &[], &[]);
        assert!(s.declare_arg("A", Some("${B:?required}")).is_err());
    }

    #[test]
    fn builtin_args_format() {
        let t = PlatformSpec::parse("linux/arm/v7").unwrap();
        let b = PlatformSpec::parse("linux/amd64").unwrap();
        let args = builtin_args(&t, &b);
        let get = |k: &str| args.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TARGETPLATFORM"), Some("linux/arm/v7"));
        assert_eq!(get("TARGETVARIANT"), Some("v7"));
        assert_eq!(get("BUILDARCH"), Some("amd64"));
        assert_eq!(get("BUILDVARIANT"), Some(""));
    }

    #[test]
    fn proxy_env_from_build_args() {
        let args: BTreeMap<String, String> = [
            ("HTTP_PROXY", "http://p:3128"),
            ("No_Proxy", "localhost"),
            ("OTHER", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = proxy_env(&args);
        assert_eq!(
            env,
            [
                ("HTTP_PROXY".to_string(), "http://p:3128".to_string()),
                ("http_proxy".to_string(), "http://p:3128".to_string()),
                ("NO_PROXY".to_string(), "localhost".to_string()),
                ("no_proxy".to_string(), "localhost".to_string()),
            ]
        );
    }

    fn build(
        src: &str,
        args: &[(&str, &str)],
        target: Option<&str>,
    ) -> Result<ResolvedBuild, ResolveError> {
        let df = crate::parse_dockerfile(src).expect("test Dockerfile parses");
        let opts = BuildOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: target.map(String::from),
            target_platform: PlatformSpec::parse("linux/arm64").unwrap(),
            build_platform: PlatformSpec::parse("linux/amd64").unwrap(),
        };
        resolve(&df, &opts)
    }

    /// `base!(name, dockerfile, [build args], expected base name of the last stage)`.
    macro_rules! base {
        ($name:ident, $src:expr, [$(($k:expr, $v:expr)),*], $expected:expr) => {
            #[test]
            fn $name() {
                let b = build($src, &[$(($k, $v)),*], None).unwrap();
                assert_eq!(b.stages.last().unwrap().base_name, $expected);
            }
        };
    }

    /// `rejects!(name, dockerfile, target, message)`: resolution fails with exactly `message`.
    macro_rules! rejects {
        ($name:ident, $src:expr, $target:expr, $msg:expr) => {
            #[test]
            fn $name() {
                let err = build($src, &[], $target).unwrap_err();
                assert_eq!(err.to_string(), $msg);
            }
        };
    }

    base!(
        meta_arg_default,
        "ARG TAG=3.19\nFROM alpine:$TAG\n",
        [],
        "alpine:3.19"
    );
    base!(
        meta_arg_overridden,
        "ARG TAG=3.19\nFROM alpine:$TAG\n",
        [("TAG", "edge")],
        "alpine:edge"
    );
    base!(meta_args_chain, "ARG A=x\nARG B=${A}y\nFROM $B\n", [], "xy");
    base!(
        meta_arg_quotes_removed,
        "ARG IMG=\"busy box\"\nFROM \"$IMG\"\n",
        [],
        "busy box"
    );
    base!(
        builtin_in_from,
        "FROM img:$TARGETARCH-$BUILDARCH\n",
        [],
        "img:arm64-amd64"
    );
    base!(
        builtin_overridden,
        "FROM img:$TARGETARCH\n",
        [("TARGETARCH", "s390x")],
        "img:s390x"
    );
    base!(
        target_stage_builtin,
        "FROM a AS one\nFROM img:$TARGETSTAGE AS two\n",
        [],
        "img:two"
    );
    base!(
        meta_arg_without_default_is_unset,
        "ARG NOPE\nFROM img${NOPE:-:fallback}\n",
        [],
        "img:fallback"
    );

    rejects!(
        blank_base,
        "FROM ${BLANK} AS foo\n",
        None,
        "base name (${BLANK}) should not be blank"
    );
    rejects!(
        unknown_target_suggests,
        "FROM a AS build\nFROM b AS test\n",
        Some("buidl"),
        "target stage \"buidl\" could not be found (did you mean build?)"
    );
    rejects!(
        unknown_target_no_hint,
        "FROM a AS build\n",
        Some("zzzzzz"),
        "target stage \"zzzzzz\" could not be found"
    );
    rejects!(from_expansion, "FROM a AS x\nFROM b\nCOPY --from=$X f /\n", None,
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround");
    rejects!(
        bad_index,
        "FROM a\nFROM b\nCOPY --from=5 f /\n",
        None,
        "invalid stage index 5"
    );
    rejects!(
        self_cycle,
        "FROM busybox AS s0\nCOPY --from=s0 f /\n",
        None,
        "circular dependency detected on stage: s0"
    );
    rejects!(
        copy_from_later,
        "FROM a AS one\nCOPY --from=two f /\nFROM b AS two\nFROM c\nCOPY --from=one f /\n",
        None,
        "cannot copy from stage \"two\", it needs to be defined before current stage \"one\""
    );
    rejects!(
        copy_url,
        "FROM a\nCOPY https://example.com/x /\n",
        None,
        "source can't be a URL for COPY"
    );
    rejects!(
        blank_platform,
        "FROM --platform=$NOPE a\n",
        None,
        "empty platform value from expression $NOPE"
    );

    #[test]
    fn stage_references_and_reachability() {
        let src = "FROM golang AS Build\nRUN make\n\
                   FROM alpine AS unused\n\
                   FROM build AS test\nRUN --mount=type=cache,target=/c,from=BUILD go test\n\
                   FROM scratch\nCOPY --from=0 /bin /bin\nCOPY --from=test /r /r\nCOPY --from=nginx:1 /etc /etc\n";
        let b = build(
            src,
            &[
                ("UNUSED_ARG", "1"),
                ("http_proxy", "p"),
                ("SOURCE_DATE_EPOCH", "0"),
                ("BUILDKIT_INLINE_CACHE", "1"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(b.target, 3);
        assert_eq!(b.stages[2].base, StageBase::Stage(0));
        assert_eq!(b.stages[3].base, StageBase::Scratch);
        assert_eq!(b.stages[2].stage_dependencies(), BTreeSet::from([0]));
        assert_eq!(b.stages[3].stage_dependencies(), BTreeSet::from([0, 2]));
        assert_eq!(b.build_order, [0, 2, 3], "the unused stage is never built");
        assert_eq!(b.images, ["golang", "nginx:1"]);
        assert_eq!(b.unused_build_args, ["UNUSED_ARG"]);
        assert_eq!(b.stages[1].display_name, "unused");
    }

    #[test]
    fn from_matches_stage_names_exactly_and_only_earlier_ones() {
        let b = build(
            "FROM a AS base\nFROM Base\nFROM later\nFROM b AS later\n",
            &[],
            Some("LATER"),
        )
        .unwrap();
        assert_eq!(b.stages[1].base, StageBase::Image("Base".into()));
        assert_eq!(b.stages[2].base, StageBase::Image("later".into()));
        assert_eq!(b.target, 3, "targets match case-insensitively");
    }

    #[test]
    fn forward_copy_in_unreachable_stage_is_fine() {
        let b = build(
            "FROM a AS one\nCOPY --from=two f /\nFROM b AS two\nFROM c\n",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(b.build_order, [3 - 1]);
    }

    #[test]
    fn platform_flag_expands_builtins() {
        let b = build(
            "FROM --platform=$BUILDPLATFORM golang AS b\nFROM --platform=linux/arm/v6 x\n",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(
            b.stages[0]
                .platform
                .as_ref()
                .map(|p| p.to_string())
                .as_deref(),
            Some("linux/amd64")
        );
        assert_eq!(
            b.stages[1]
                .platform
                .as_ref()
                .map(|p| p.to_string())
                .as_deref(),
            Some("linux/arm/v6")
        );
    }

    #[test]
    fn scope_from_resolved_build_inherits_meta_args_on_request() {
        let src = "ARG V=1.0\nFROM a\nARG V\nARG TARGETOS\nARG W=$V-$TARGETOS\nENV V=env\n";
        let df = crate::parse_dockerfile(src).unwrap();
        let b = build(src, &[], None).unwrap();
        let mut scope = b.scope_for_image(&["PATH=/bin".to_string()]);
        for ins in &df.stages[0].instructions {
            scope.apply(&ins.kind).unwrap();
        }
        assert_eq!(scope.get("W"), Some("1.0-linux"));
        assert_eq!(scope.get("V"), Some("env"));
        assert_eq!(
            scope.run_history_prefix(),
            "|3 V=env TARGETOS=linux W=1.0-linux "
        );
        assert_eq!(scope.get("PATH"), Some("/bin"));
    }

    #[test]
    fn onbuild_triggers_of_a_base_stage_add_dependencies() {
        let src = "FROM alpine AS assets\nFROM alpine AS base\nONBUILD COPY --from=assets /a /a\n\
                   FROM alpine AS unused\nFROM base\n";
        let b = build(src, &[], None).unwrap();
        let d = &b.stages[3].dependencies;
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].source.clone(), d[0].onbuild, d[0].instruction),
            (Source::Stage(0), true, 0)
        );
        assert_eq!(b.build_order, [0, 1, 3]);
        // The base stage itself does not run its own triggers.
        assert!(b.stages[1].dependencies.is_empty());
    }

    #[test]
    fn healthcheck_history_formats_like_go() {
        let h = Healthcheck::Check {
            test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
            interval: Some(90_000_000_000),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some(3),
        };
        assert_eq!(
            healthcheck_history(&h),
            "HEALTHCHECK {Test:[CMD-SHELL curl -f localhost] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}"
        );
        assert!(healthcheck_history(&Healthcheck::None)
            .starts_with("HEALTHCHECK {Test:[NONE] Interval:0s"));
    }

    #[test]
    fn default_path_added_once_and_not_for_windows() {
        let mut env = vec!["A=1".to_string()];
        ensure_default_path(&mut env, "linux");
        ensure_default_path(&mut env, "linux");
        assert_eq!(env, ["A=1".to_string(), format!("PATH={DEFAULT_PATH}")]);
        let mut win = Vec::new();
        ensure_default_path(&mut win, "windows");
        assert!(win.is_empty());
    }

    #[test]
    fn add_env_replaces_first_or_appends() {
        let mut env = vec!["A=1".to_string(), "B".to_string(), "A=2".to_string()];
        add_env(&mut env, "A", "x");
        add_env(&mut env, "B", "y");
        add_env(&mut env, "C", "z");
        assert_eq!(env, ["A=x", "B=y", "A=2", "C=z"]);
    }
}
