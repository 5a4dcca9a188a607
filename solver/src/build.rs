//! One build: plan the stages, schedule them over a DAG, run each stage's steps with the cache,
//! and assemble the final image.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use forge_cache::{CacheRecord, Store};
use forge_oci::layer::{LayerOptions, SourceKind};
use forge_oci::{Compression, Descriptor, Digest, History, ImageConfig, Platform};
use forge_parser::resolve::{
    proxy_env, resolve, BuildOptions as ResolveOptions, PlatformSpec, ResolveError, ResolvedBuild, StageBase, StageScope,
};
use forge_parser::{Dockerfile, Instruction, InstructionKind, NetworkMode, SecurityMode, Stage};
use forge_sandbox::{CancelToken, Sandbox};
use serde::{Deserialize, Serialize};

use crate::config::{self, apply_metadata, clean_abs, get_env, join_workdir, shell_of};
use crate::context::{Context, Ignore};
use crate::copy::{self, CopyFlags, SourceSide};
use crate::error::{Location, SolveError};
use crate::event::{Event, EventSink, LogStream};
use crate::explain::{self, StepMemory};
use crate::images::{ImageSource, ResolvedImage};
use crate::key::{CacheKey, KeyBuilder};
use crate::layered::LayeredView;
use petgraph::graph::{DiGraph, NodeIndex};
use crate::remote::{RemoteCaches, StepRecord};

/// A secret's bytes. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// A `--build-context NAME=VALUE` override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory: usable with `COPY --from=NAME`.
    Dir(PathBuf),
    /// An image reference (`docker-image://REF`, or an `oci-layout://` image the caller
    /// imported into the store first): replaces `FROM NAME` and `COPY --from=NAME`.
    Image(String),
}

/// Everything a build needs besides the store and the executors.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile text.
    pub dockerfile: String,
    /// Where the Dockerfile lives (for `<Dockerfile>.dockerignore`), if on disk.
    pub dockerfile_path: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub pull: bool,
    pub labels: BTreeMap<String, String>,
    /// `--network`: the default for RUN steps.
    pub network: NetworkMode,
    pub secrets: BTreeMap<String, Secret>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub build_contexts: BTreeMap<String, NamedContext>,
    /// Layer compression. `None` (the default) stores the layers a build makes as plain tars
    /// and leaves compressing to whatever takes the image out of the store
    /// ([`forge_cache::Store::export_image`]); `Some` compresses them as they are written.
    pub compression: Option<Compression>,
    pub source_date_epoch: Option<i64>,
    pub allow_insecure: bool,
    /// How many RUN steps may execute at once.
    pub max_parallel_runs: usize,
    /// Report why each step missed the cache ([`Event::Explain`]).
    pub explain: bool,
    /// Imported build caches, asked after the local store misses.
    pub remote_caches: RemoteCaches,
    /// Downloads `ADD https://…` sources.
    pub url_fetcher: crate::fetch::Fetcher,
}

impl BuildOptions {
    pub fn new(context: impl Into<PathBuf>, dockerfile: impl Into<String>) -> BuildOptions {
        BuildOptions {
            context: context.into(),
            dockerfile: dockerfile.into(),
            dockerfile_path: None,
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            pull: false,
            labels: BTreeMap::new(),
            network: NetworkMode::Default,
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            build_contexts: BTreeMap::new(),
            compression: None,
            source_date_epoch: None,
            allow_insecure: false,
            max_parallel_runs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            explain: false,
            remote_caches: RemoteCaches::default(),
            url_fetcher: crate::fetch::Fetcher::default(),
        }
    }
}

/// A layer as the solver tracks it: its diff_id and its blob in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

/// The state of a stage after some steps.
#[derive(Clone, Debug)]
pub struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// Identity of the filesystem state: the chain of step keys.
    pub key: CacheKey,
    pub history: Vec<History>,
    /// The ARG/ENV scope the next step expands its words in.
    pub scope: StageScope,
    /// Whether this stage set CMD (so ENTRYPOINT resets only an inherited one).
    pub cmd_set: bool,
    /// Keys (hex) of the steps whose layers make up `layers`' own part, in order.
    pub step_keys: Vec<String>,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct BuildOutput {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub manifest: forge_oci::Manifest,
    pub config: ImageConfig,
    pub config_digest: Digest,
    /// Every step with its key, in the order they finished: what `--cache-to` exports.
    pub steps: Vec<StepRecord>,
    /// Steps that ran and steps served from the cache.
    pub steps_run: usize,
    pub steps_cached: usize,
}

/// What a cache record holds for a step.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StepValue {
    layer: Option<Layer>,
    /// When the step first ran (RFC 3339). Reused on cache hits, so that a rebuild from the
    /// cache yields the very same image.
    #[serde(default)]
    created: Option<String>,
}

/// A slot a stage's result is published into; dependents wait on it.
struct Slot {
    value: Mutex<Option<Option<Arc<StageState>>>>,
    ready: Condvar,
}

impl Slot {
    fn new() -> Slot {
        Slot { value: Mutex::new(None), ready: Condvar::new() }
    }
    fn set(&self, v: Option<Arc<StageState>>) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        self.ready.notify_all();
    }
    fn wait(&self) -> Option<Arc<StageState>> {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = g.as_ref() {
                return v.clone();
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A counting semaphore bounding concurrent RUN steps.
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Semaphore {
    fn new(n: usize) -> Semaphore {
        Semaphore { free: Mutex::new(n.max(1)), cv: Condvar::new() }
    }
    fn acquire(&self) -> SemaphoreGuard<'_> {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *g == 0 {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        *g -= 1;
        SemaphoreGuard(self)
    }
}

struct SemaphoreGuard<'a>(&'a Semaphore);

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// Where a stage's base comes from.
#[derive(Clone, Debug)]
enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

/// The planned shape of a build.
struct Plan {
    bases: Vec<Base>,
    /// Stage → stages it needs (FROM, COPY --from, RUN --mount from).
    deps: Vec<Vec<usize>>,
    target: usize,
    reachable: Vec<bool>,
    resolved: ResolvedBuild,
}

/// Shared state of one build.
pub struct Build<'a> {
    store: &'a Store,
    images: &'a dyn ImageSource,
    sandbox: &'a Sandbox,
    opts: &'a BuildOptions,
    events: &'a EventSink,
    cancel: &'a CancelToken,
    df: Dockerfile,
    plan: Plan,
    context: OnceLock<Result<Arc<Context>, String>>,
    /// The context directory, canonicalized once: it names the stat cache and step memories.
    context_abs: PathBuf,
    named_contexts: Mutex<HashMap<String, Arc<Context>>>,
    slots: Vec<Slot>,
    runs: Semaphore,
    key_locks: Mutex<HashMap<CacheKey, Arc<Mutex<()>>>>,
    next_step: AtomicUsize,
    steps_run: AtomicUsize,
    steps_cached: AtomicUsize,
    first_error: Mutex<Option<SolveError>>,
    image_cache: Mutex<HashMap<String, Arc<ResolvedImage>>>,
    /// Steps as they finish, for the cache export.
    step_records: Mutex<Vec<StepRecord>>,
    /// Steps served by an imported cache: recorded locally once their blob is here.
    remote_hits: Mutex<Vec<(CacheKey, StepValue)>>,
    /// Opaque-directory answers for the snapshots this build looks into.
    opaque_memo: crate::layered::OpaqueMemo,
}

fn location(inst: &Instruction) -> Location {
    Location { instruction: inst.source.trim().to_string(), span: inst.span }
}

fn stage_location(stage: &Stage) -> Location {
    Location { instruction: stage.source.trim().to_string(), span: stage.span }
}

/// Closest name by edit distance, for "did you mean" hints.
pub fn suggest<'n>(name: &str, candidates: impl IntoIterator<Item = &'n str>) -> Option<String> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    candidates
        .into_iter()
        .map(|c| (dist(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c.to_string())
}

fn now_rfc3339(epoch: Option<i64>) -> String {
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    });
    rfc3339(secs)
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

fn platform_spec(p: &Platform) -> PlatformSpec {
    PlatformSpec::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
}

fn resolve_error(df: &Dockerfile, e: ResolveError) -> SolveError {
    match e {
        ResolveError::UnknownTarget { target, suggestion } => {
            SolveError::UnknownTarget { target, help: suggestion.map(|s| format!("did you mean {s}?")) }
        }
        other => match other.span() {
            Some(span) => {
                let text = df
                    .stages
                    .iter()
                    .flat_map(|st| std::iter::once((st.span, st.source.clone())).chain(st.instructions.iter().map(|i| (i.span, i.source.clone()))))
                    .find(|(sp, _)| sp.line == span.line)
                    .map(|(_, t)| t.trim().to_string())
                    .unwrap_or_default();
                SolveError::Step { location: Location { instruction: text, span }, message: other.to_string(), help: None }
            }
            None => SolveError::Other(other.to_string()),
        },
    }
}

fn plan(df: &Dockerfile, opts: &BuildOptions) -> Result<Plan, SolveError> {
    let ropts = ResolveOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: platform_spec(&opts.platform),
        build_platform: platform_spec(&Platform::host()),
    };
    let resolved = resolve(df, &ropts).map_err(|e| resolve_error(df, e))?;
    let mut bases = Vec::new();
    let mut deps = Vec::new();
    for st in &resolved.stages {
        bases.push(match &st.base {
            StageBase::Scratch => Base::Scratch,
            StageBase::Stage(i) => Base::Stage(*i),
            StageBase::Image(r) => match opts.build_contexts.get(r) {
                Some(NamedContext::Image(over)) => Base::Image(over.clone()),
                _ => Base::Image(r.clone()),
            },
        });
        deps.push(st.stage_dependencies().into_iter().collect());
    }
    let reachable = (0..df.stages.len()).map(|i| resolved.reachable.contains(&i)).collect();
    Ok(Plan { bases, deps, target: resolved.target, reachable, resolved })
}

/// Runs a build to completion.
pub fn build(
    store: &Store,
    images: &dyn ImageSource,
    sandbox: &Sandbox,
    opts: &BuildOptions,
    events: &EventSink,
    cancel: &CancelToken,
) -> Result<BuildOutput, SolveError> {
    let df = forge_parser::parse_dockerfile(&opts.dockerfile)?;
    for w in &df.warnings {
        events(Event::Warning { message: w.to_string() });
    }
    let plan = plan(&df, opts)?;
    for arg in &plan.resolved.unused_build_args {
        events(Event::Warning { message: format!("build argument {arg:?} was not consumed by any stage") });
    }
    let _lease = store.lease()?;
    let internal = CancelToken::new();
    let b = Build {
        store,
        images,
        sandbox,
        opts,
        events,
        cancel: &internal,
        slots: df.stages.iter().map(|_| Slot::new()).collect(),
        df,
        plan,
        context: OnceLock::new(),
        context_abs: std::fs::canonicalize(&opts.context).unwrap_or_else(|_| opts.context.clone()),
        named_contexts: Mutex::new(HashMap::new()),
        runs: Semaphore::new(opts.max_parallel_runs),
        key_locks: Mutex::new(HashMap::new()),
        next_step: AtomicUsize::new(1),
        steps_run: AtomicUsize::new(0),
        steps_cached: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        image_cache: Mutex::new(HashMap::new()),
        step_records: Mutex::new(Vec::new()),
        remote_hits: Mutex::new(Vec::new()),
        opaque_memo: crate::layered::OpaqueMemo::default(),
    };
    // A failure cancels the build's own token (killing running RUNs); the caller's token is
    // only watched, so a failed build leaves it usable (a retry with the same token works).
    // The watcher polls every 20 ms and wakes at once when the build ends (its channel closes).
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let internal = &internal;
    std::thread::scope(|s| {
        s.spawn(move || loop {
            match finished.recv_timeout(std::time::Duration::from_millis(20)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if cancel.is_cancelled() {
                        internal.cancel();
                        return;
                    }
                }
                _ => return,
            }
        });
        let r = b.run_all();
        drop(done);
        r
    })
}

impl Build<'_> {
    fn fail(&self, e: SolveError) {
        let mut g = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
            // Stop everything else: running RUNs are killed, waiting stages give up.
            self.cancel.cancel();
        }
    }

    fn run_all(&self) -> Result<BuildOutput, SolveError> {
        // The stage graph: an edge from each stage to the stages that need it. Stages start in
        // topological order, each on its own thread, and wait only for their own inputs, so
        // independent stages run side by side.
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let nodes: HashMap<usize, NodeIndex> = (0..self.df.stages.len())
            .filter(|&i| self.plan.reachable[i])
            .map(|i| (i, graph.add_node(i)))
            .collect();
        for (&i, &n) in &nodes {
            for d in &self.plan.deps[i] {
                if let Some(&dn) = nodes.get(d) {
                    graph.add_edge(dn, n, ());
                }
            }
        }
        let order: Vec<usize> = petgraph::algo::toposort(&graph, None)
            .map_err(|c| SolveError::Other(format!("circular dependency on stage {}", graph[c.node_id()])))?
            .into_iter()
            .map(|n| graph[n])
            .collect();
        std::thread::scope(|s| {
            for &i in &order {
                let run = move || match self.run_stage(i) {
                    Ok(st) => self.slots[i].set(Some(Arc::new(st))),
                    Err(e) => {
                        self.fail(e);
                        self.slots[i].set(None);
                    }
                };
                // The main thread's stack size, not the 2 MiB default of spawned threads.
                let spawned = std::thread::Builder::new().name(format!("stage-{i}")).stack_size(8 << 20).spawn_scoped(s, run);
                if let Err(e) = spawned {
                    self.fail(SolveError::Other(format!("cannot start a thread for stage {i}: {e}")));
                    self.slots[i].set(None);
                }
            }
        });
        if let Some(e) = self.first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if let Some(Ok(ctx)) = self.context.get() {
                self.save_stat_cache(ctx);
            }
            return Err(e);
        }
        let final_state = self.slots[self.plan.target].wait().ok_or(SolveError::Cancelled)?;
        if let Some(Ok(ctx)) = self.context.get() {
            self.save_stat_cache(ctx);
        }
        self.export(&final_state)
    }

    fn stat_cache_name(&self) -> String {
        let abs = &self.context_abs;
        let h = blake3::hash(abs.as_os_str().as_encoded_bytes());
        format!("statcache-v2-{}", &h.to_hex()[..24])
    }

    fn save_stat_cache(&self, ctx: &Context) {
        if ctx.stat_cache_dirty() {
            // A lost stat cache only costs rehashing; never fail a build over it.
            let name = self.stat_cache_name();
            let _ = self.store.write_state_with(&name, &mut |w| ctx.write_stat_cache(w));
            // The first format, keyed the same way, is superseded.
            let _ = std::fs::remove_file(self.store.state_path(&name.replace("statcache-v2-", "statcache-v1-")));
        }
    }

    fn context(&self) -> Result<Arc<Context>, SolveError> {
        let r = self.context.get_or_init(|| {
            let ignore = Ignore::load(&self.opts.context, self.opts.dockerfile_path.as_deref()).map_err(|e| e.to_string())?;
            let mut ctx = Context::walk(&self.opts.context, ignore).map_err(|e| e.to_string())?;
            // The persisted stat cache streams into the index; a missing or unreadable one
            // only means reading the files.
            if let Ok(Some(f)) = self.store.open_state(&self.stat_cache_name()) {
                ctx.load_stat_cache(f);
            }
            Ok(Arc::new(ctx))
        });
        r.clone().map_err(|m| SolveError::Context { path: self.opts.context.clone(), message: m })
    }

    fn named_context(&self, name: &str, dir: &Path) -> Result<Arc<Context>, SolveError> {
        let mut g = self.named_contexts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(name) {
            return Ok(c.clone());
        }
        let c = Arc::new(Context::walk(dir, Ignore::load(dir, None)?)?);
        g.insert(name.to_string(), c.clone());
        Ok(c)
    }

    fn step_id(&self) -> usize {
        self.next_step.fetch_add(1, Ordering::SeqCst)
    }

    fn emit(&self, e: Event) {
        (self.events)(e)
    }

    fn check_cancel(&self) -> Result<(), SolveError> {
        if self.cancel.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        Ok(())
    }

    fn resolve_image(&self, reference: &str, step: usize) -> Result<Arc<ResolvedImage>, SolveError> {
        if let Some(r) = self.image_cache.lock().unwrap_or_else(|p| p.into_inner()).get(reference) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.images.resolve(reference, &self.opts.platform, self.opts.pull, step, self.events)?);
        self.image_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(reference.to_string(), r.clone());
        Ok(r)
    }

    fn image_state(&self, img: &ResolvedImage) -> StageState {
        let layers = img
            .manifest
            .layers
            .iter()
            .zip(img.config.rootfs.diff_ids.iter())
            .map(|(d, id)| Layer { diff_id: id.clone(), blob: d.clone() })
            .collect();
        let mut kb = KeyBuilder::new("image");
        kb.str("manifest", &img.manifest_digest.to_string());
        let scope = self.plan.resolved.scope_for_image(img.config.config.env.as_deref().unwrap_or(&[]));
        StageState {
            config: img.config.clone(),
            layers,
            key: kb.finish().0,
            history: img.config.history.clone(),
            scope,
            cmd_set: false,
            step_keys: Vec::new(),
        }
    }

    fn stage_label(&self, idx: usize) -> String {
        let st = &self.df.stages[idx];
        match &st.name {
            Some(n) => format!("{n} "),
            None if idx == self.plan.target => String::new(),
            None => format!("stage-{idx} "),
        }
    }

    fn no_cache_for(&self, idx: usize) -> bool {
        if self.opts.no_cache {
            return true;
        }
        let st = &self.df.stages[idx];
        self.opts.no_cache_filter.iter().any(|f| {
            st.name.as_deref().map(|n| n.eq_ignore_ascii_case(f)).unwrap_or(false) || f.parse::<usize>().ok() == Some(idx)
        })
    }

    fn run_stage(&self, idx: usize) -> Result<StageState, SolveError> {
        for &d in &self.plan.deps[idx] {
            if self.slots[d].wait().is_none() {
                return Err(SolveError::Cancelled);
            }
        }
        self.check_cancel()?;
        let stage = &self.df.stages[idx];
        let is_vertex = |i: &Instruction| {
            matches!(i.kind, InstructionKind::Run(_) | InstructionKind::Copy(_) | InstructionKind::Add(_) | InstructionKind::Workdir(_))
        };
        let mut vertex_total = 1 + stage.instructions.iter().filter(|i| is_vertex(i)).count();
        let label = self.stage_label(idx);
        let from_id = self.step_id();
        let base_desc = match &self.plan.bases[idx] {
            Base::Image(r) if *r != self.plan.resolved.stages[idx].base_name => {
                format!("{} ({r})", self.plan.resolved.stages[idx].base_name)
            }
            _ => self.plan.resolved.stages[idx].base_name.clone(),
        };
        self.emit(Event::StepStarted { id: from_id, name: format!("[{label}1/{vertex_total}] FROM {base_desc}") });
        let started = Instant::now();
        let mut st = match &self.plan.bases[idx] {
            Base::Scratch => {
                let mut kb = KeyBuilder::new("scratch");
                kb.str("platform", &self.opts.platform.to_string());
                StageState {
                    config: ImageConfig::scratch(&self.opts.platform),
                    layers: Vec::new(),
                    key: kb.finish().0,
                    history: Vec::new(),
                    scope: self.plan.resolved.scope_for_image(&[]),
                    cmd_set: false,
                    step_keys: Vec::new(),
                }
            }
            Base::Stage(i) => {
                let mut parent = (*self.slots[*i].wait().ok_or(SolveError::Cancelled)?).clone();
                parent.scope = parent.scope.child();
                parent.cmd_set = false;
                parent
            }
            Base::Image(r) => {
                let img = self.resolve_image(r, from_id).map_err(|e| match e {
                    SolveError::Image { reference, message } => SolveError::Step {
                        location: stage_location(stage),
                        message: format!("image {reference}: {message}"),
                        help: None,
                    },
                    other => other,
                })?;
                self.image_state(&img)
            }
        };
        self.emit(Event::StepDone { id: from_id, duration: started.elapsed(), cached: false });

        // ONBUILD triggers of the base run first, then are cleared.
        let triggers = st.config.config.on_build.take().unwrap_or_default();
        let mut instructions: Vec<Instruction> = Vec::new();
        for t in &triggers {
            let parsed = forge_parser::parse_dockerfile(&format!("FROM scratch\n{t}\n")).map_err(|e| SolveError::Step {
                location: stage_location(stage),
                message: format!("invalid ONBUILD trigger {t:?} in the base image: {e}"),
                help: None,
            })?;
            for mut inst in parsed.stages.into_iter().flat_map(|s| s.instructions) {
                inst.span = stage.span;
                instructions.push(inst);
            }
        }
        // Triggers count as steps of this stage too.
        vertex_total += instructions.iter().filter(|i| is_vertex(i)).count();
        instructions.extend(stage.instructions.iter().cloned());
        let mut vertex = 1;
        for inst in &instructions {
            self.check_cancel()?;
            if is_vertex(inst) {
                vertex += 1;
            }
            let name = format!("[{label}{vertex}/{vertex_total}] {}", inst.source.trim());
            self.step(idx, inst, &name, &mut st)?;
        }
        Ok(st)
    }

    /// Appends a history entry. Metadata steps take the time of the last filesystem change
    /// (or of the base image), so the config depends only on the build's inputs and the
    /// cache: a rebuild served from the cache gives the same digest.
    fn history(&self, st: &mut StageState, created_by: String, empty: bool) {
        let created = match self.opts.source_date_epoch {
            Some(e) => rfc3339(e),
            None => st.history.last().and_then(|h| h.created.clone()).or_else(|| st.config.created.clone()).unwrap_or_else(|| rfc3339(0)),
        };
        self.history_at(st, created_by, empty, created);
    }

    fn history_at(&self, st: &mut StageState, created_by: String, empty: bool, created: String) {
        st.history.push(History {
            created: Some(created),
            created_by: Some(created_by),
            author: None,
            comment: Some("forge.dockerfile.v0".into()),
            empty_layer: empty,
        });
    }

    fn step(&self, idx: usize, inst: &Instruction, name: &str, st: &mut StageState) -> Result<(), SolveError> {
        let loc = location(inst);
        match &inst.kind {
            InstructionKind::Arg(defs) => {
                st.scope.apply(&inst.kind).map_err(|e| SolveError::step(&loc, e.to_string()))?;
                // History: `ARG K=V` with the value each got (build-arg, default or global), or
                // the bare name when it has none, as BuildKit records it.
                let words: Vec<String> = defs
                    .iter()
                    .map(|d| match st.scope.declared_args().iter().rev().find(|(k, _)| *k == d.name) {
                        Some((k, Some(v))) => format!("{k}={v}"),
                        _ => d.name.clone(),
                    })
                    .collect();
                self.history(st, format!("ARG {}", words.join(" ")), true);
                return Ok(());
            }
            InstructionKind::Env(_) => {
                let pairs = st.scope.apply(&inst.kind).map_err(|e| SolveError::step(&loc, e.to_string()))?;
                let kvs = pairs.into_iter().map(|(key, value)| forge_parser::KeyValue { key, value }).collect();
                let kind = InstructionKind::Env(kvs);
                if let Some(text) = apply_metadata(&mut st.config, &kind, &mut st.cmd_set) {
                    self.history(st, text, true);
                }
                return Ok(());
            }
            _ => {}
        }
        let kind = inst.kind.expand(st.scope.lexer(), &st.scope.env()).map_err(|e| SolveError::step(&loc, e.to_string()))?;
        match &kind {
            InstructionKind::Run(run) => self.run_step(idx, inst, name, run, st),
            InstructionKind::Copy(c) => {
                let from = c.from.clone();
                self.copy_step(idx, inst, name, &c.common, from.as_deref(), c.parents, false, st, None)
            }
            InstructionKind::Add(a) => {
                if let Some(g) = a.common.sources.iter().find(|s| crate::git::is_git_source(s)) {
                    if a.common.sources.len() != 1 {
                        return Err(SolveError::step(&loc, "ADD of a git repository takes exactly one source; use one ADD for each"));
                    }
                    if a.checksum.is_some() {
                        return Err(SolveError::step(&loc, "ADD --checksum applies to downloaded files, not to git repositories"));
                    }
                    let src = crate::git::GitSource::parse(g).map_err(|m| SolveError::step(&loc, format!("ADD {g}: {m}")))?;
                    let co = crate::git::checkout(&src, a.keep_git_dir, self.store, &loc)?;
                    let mut common = a.common.clone();
                    common.sources = vec![".".to_string()];
                    let from_key = format!("git:{}@{}:{}", src.url, co.commit, src.subdir.as_deref().unwrap_or(""));
                    return self.copy_step(idx, inst, name, &common, None, false, false, st, Some((co.context.clone(), from_key)));
                }
                let urls: Vec<&String> = a.common.sources.iter().filter(|s| crate::fetch::is_url(s)).collect();
                if urls.is_empty() {
                    return self.copy_step(idx, inst, name, &a.common, None, false, a.unpack != Some(false), st, None);
                }
                if urls.len() != a.common.sources.len() {
                    return Err(SolveError::step(&loc, "ADD cannot mix URLs and local sources; use one ADD for each"));
                }
                let dl = crate::fetch::download(self.opts.url_fetcher.0.as_deref(), &urls, a.checksum.as_deref(), self.store, &loc)?;
                let mut common = a.common.clone();
                common.sources = dl.names.clone();
                let from_key = format!("url:{}", urls.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(" "));
                // Remote files are never unpacked, as in BuildKit.
                self.copy_step(idx, inst, name, &common, None, false, false, st, Some((dl.context.clone(), from_key)))
            }
            InstructionKind::Workdir(w) => self.workdir_step(idx, inst, name, w, st),
            InstructionKind::Expose(ports) => {
                for p in ports {
                    config::expose_keys(p).map_err(|m| SolveError::step(&loc, m))?;
                }
                if let Some(text) = apply_metadata(&mut st.config, &kind, &mut st.cmd_set) {
                    self.history(st, text, true);
                }
                Ok(())
            }
            _ => {
                if let Some(text) = apply_metadata(&mut st.config, &kind, &mut st.cmd_set) {
                    self.history(st, text, true);
                }
                Ok(())
            }
        }
    }

    /// Snapshot directories for a state's layers, top-most first, unpacking blobs as needed.
    fn snapshots(&self, st: &StageState) -> Result<Vec<PathBuf>, SolveError> {
        let mut out = Vec::with_capacity(st.layers.len());
        for l in st.layers.iter().rev() {
            if self.store.snapshot_path(&l.diff_id).is_none() {
                self.ensure_blob(l)?;
            }
            let snap = crate::layers::ensure_snapshot(self.store, l)?;
            // Identical layers (two `RUN true`) share one snapshot; overlayfs refuses a lowerdir
            // listed twice, and the top-most copy alone gives the same merged tree.
            if !out.contains(&snap) {
                out.push(snap);
            }
        }
        Ok(out)
    }

    /// Makes a layer's blob local, fetching it from an imported cache when needed.
    fn ensure_blob(&self, l: &Layer) -> Result<(), SolveError> {
        if self.store.has_blob(&l.blob.digest) {
            return Ok(());
        }
        let mut last = None;
        for rc in &self.opts.remote_caches.0 {
            match rc.fetch(&l.blob) {
                Ok(()) if self.store.has_blob(&l.blob.digest) => return Ok(()),
                Ok(()) => last = Some(format!("the cache did not deliver {}", l.blob.digest)),
                Err(e) => last = Some(e),
            }
        }
        Err(SolveError::Layer(format!(
            "layer {} is not in the store{}",
            l.blob.digest,
            last.map(|e| format!(" and could not be fetched from the imported cache: {e}")).unwrap_or_default()
        )))
    }

    fn view(&self, st: &StageState) -> Result<LayeredView, SolveError> {
        Ok(LayeredView::with_memo(self.snapshots(st)?, self.opaque_memo.clone()))
    }

    fn key_lock(&self, key: &CacheKey) -> Arc<Mutex<()>> {
        self.key_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(*key).or_default().clone()
    }

    fn lookup(&self, idx: usize, key: &CacheKey) -> Result<Option<StepValue>, SolveError> {
        if self.no_cache_for(idx) {
            return Ok(None);
        }
        let hex = key.to_hex();
        if let Some(rec) = self.store.cache_get(&hex)? {
            if let Ok(v) = serde_json::from_value::<StepValue>(rec.value) {
                // A record whose blob is gone is a miss (the store was pruned or repaired).
                if v.layer.as_ref().map(|l| self.store.has_blob(&l.blob.digest)).unwrap_or(true) {
                    return Ok(Some(v));
                }
            }
        }
        for rc in &self.opts.remote_caches.0 {
            if let Some(r) = rc.lookup(&hex) {
                let v = StepValue { layer: r.layer, created: r.created };
                self.remote_hits.lock().unwrap_or_else(|p| p.into_inner()).push((*key, v.clone()));
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn record(&self, key: &CacheKey, value: &StepValue) -> Result<(), SolveError> {
        let refs = value.layer.iter().flat_map(|l| [l.blob.digest.clone(), l.diff_id.clone()]).collect();
        let rec = CacheRecord::new(refs, serde_json::to_value(value).map_err(|e| SolveError::Other(e.to_string()))?);
        self.store.cache_put(&key.to_hex(), &rec)?;
        Ok(())
    }

    fn memory_name(&self, idx: usize, inst: &Instruction) -> String {
        let abs = &self.context_abs;
        let mut h = blake3::Hasher::new();
        h.update(abs.as_os_str().as_encoded_bytes());
        h.update(self.opts.dockerfile_path.as_deref().unwrap_or(Path::new("-")).as_os_str().as_encoded_bytes());
        h.update(self.df.stages[idx].name.as_deref().unwrap_or("").as_bytes());
        h.update(&(idx as u64).to_le_bytes());
        h.update(&(inst.span.line as u64).to_le_bytes());
        format!("explain-v1-{}", &h.finalize().to_hex()[..32])
    }

    /// Tells why a step missed, from what was remembered of its last run (`--explain`).
    fn explain_miss(&self, idx: usize, inst: &Instruction, id: usize, now: &Memory<'_>) {
        if !self.opts.explain {
            return;
        }
        let now = now.assemble();
        let name = self.memory_name(idx, inst);
        let prev: Option<StepMemory> =
            self.store.read_state(&name).ok().flatten().and_then(|b| serde_json::from_slice(&b).ok());
        let reason = explain::explain(prev.as_ref(), &now, self.no_cache_for(idx));
        self.emit(Event::Explain { id, reason });
    }

    /// Remembers a step's key fields for `--explain` and for reusing its files later. A small
    /// key file decides whether the full memory needs rewriting, so cache hits stay cheap.
    fn remember(&self, idx: usize, inst: &Instruction, now: &Memory<'_>) {
        let name = self.memory_name(idx, inst);
        let key_name = format!("{name}-key");
        if self.store.read_state(&key_name).ok().flatten().as_deref() == Some(now.key.as_bytes()) {
            return;
        }
        // Written as a stream: a COPY of many files never holds its map in memory. Losing
        // this only makes a later --explain less specific; never fail the build.
        let out = MemoryOut { key: &now.key, fields: &now.fields, files: copy::FilesOf(now.items) };
        let written = self.store.write_state_with(&name, &mut |w| {
            let mut w = std::io::BufWriter::new(w);
            serde_json::to_writer(&mut w, &out)?;
            std::io::Write::flush(&mut w)
        });
        if written.is_ok() {
            let _ = self.store.write_state(&key_name, now.key.as_bytes());
        }
    }

    /// Looks the key up; on a miss runs `exec` (once per key, even across stages).
    fn cached_step(
        &self,
        idx: usize,
        inst: &Instruction,
        id: usize,
        key: CacheKey,
        memory: Memory<'_>,
        started: Instant,
        exec: impl FnOnce() -> Result<StepValue, SolveError>,
    ) -> Result<StepValue, SolveError> {
        if let Some(v) = self.lookup(idx, &key)? {
            self.remember(idx, inst, &memory);
            self.steps_cached.fetch_add(1, Ordering::Relaxed);
            self.emit(Event::StepCached { id });
            self.emit(Event::StepDone { id, duration: started.elapsed(), cached: true });
            return Ok(v);
        }
        let lock = self.key_lock(&key);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.no_cache_for(idx) {
            if let Some(v) = self.lookup(idx, &key)? {
                self.steps_cached.fetch_add(1, Ordering::Relaxed);
                self.emit(Event::StepCached { id });
                self.emit(Event::StepDone { id, duration: started.elapsed(), cached: true });
                return Ok(v);
            }
        }
        self.explain_miss(idx, inst, id, &memory);
        let v = match exec() {
            Ok(v) => v,
            Err(e) => {
                self.emit(Event::StepFailed { id, message: e.to_string() });
                return Err(e);
            }
        };
        self.record(&key, &v)?;
        self.remember(idx, inst, &memory);
        self.steps_run.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::StepDone { id, duration: started.elapsed(), cached: false });
        Ok(v)
    }

    fn push_layer(&self, idx: usize, st: &mut StageState, key: CacheKey, v: StepValue, created_by: String) {
        self.step_records.lock().unwrap_or_else(|p| p.into_inner()).push(StepRecord {
            key: key.to_hex(),
            parent: st.key.to_hex(),
            layer: v.layer.clone(),
            created: v.created.clone(),
            stage: idx,
            in_final_image: false,
        });
        st.step_keys.push(key.to_hex());
        st.key = key;
        let empty = v.layer.is_none();
        if let Some(l) = v.layer {
            st.layers.push(l);
        }
        match (self.opts.source_date_epoch, v.created) {
            (None, Some(c)) => self.history_at(st, created_by, empty, c),
            _ => self.history(st, created_by, empty),
        }
    }

    fn run_step(
        &self,
        idx: usize,
        inst: &Instruction,
        name: &str,
        run: &forge_parser::Run,
        st: &mut StageState,
    ) -> Result<(), SolveError> {
        let loc = location(inst);
        let id = self.step_id();
        let started = Instant::now();
        self.emit(Event::StepStarted { id, name: name.to_string() });
        let shell = shell_of(&st.config);
        let (argv, stdin) = crate::run::command(run, &shell);
        // RUN sees ENV plus the ARGs in scope (ENV wins); proxy args pass through undeclared.
        let mut env: Vec<String> = st.config.config.env.clone().unwrap_or_default();
        let mut arg_env: Vec<String> = Vec::new();
        for (k, v) in st.scope.run_args() {
            if get_env(&env, &k).is_none() {
                arg_env.push(format!("{k}={v}"));
            }
        }
        // Proxy variables pass through undeclared, and stay out of the cache key.
        let proxy_env: Vec<String> = proxy_env(&self.opts.build_args)
            .into_iter()
            .filter(|(k, _)| !st.scope.declared_args().iter().any(|(d, _)| d == k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let network = run.network.unwrap_or(self.opts.network);
        let security = run.security.unwrap_or(SecurityMode::Sandbox);
        if security == SecurityMode::Insecure && !self.opts.allow_insecure {
            return Err(SolveError::Step {
                location: loc,
                message: "RUN --security=insecure is not allowed".into(),
                help: Some("pass --allow security.insecure to forge build".into()),
            });
        }
        let workdir = st.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
        let user = st.config.config.user.clone().filter(|u| !u.is_empty());
        let mounts_key = crate::run::mounts_key(&run.mounts);
        let binds = self.bind_keys(&run.mounts, &loc)?;
        let mut kb = KeyBuilder::new("run");
        kb.parent(Some(&st.key))
            .list("argv", &argv)
            .list("env", &env)
            .list("args", &arg_env)
            .opt("user", user.as_deref())
            .str("workdir", &workdir)
            .str("network", &format!("{network:?}"))
            .str("security", &format!("{security:?}"))
            .list("mounts", &mounts_key)
            .list("binds", &binds)
            .opt("stdin", stdin.as_ref().map(|s| String::from_utf8_lossy(s).into_owned()).as_deref())
            .str("platform", &self.opts.platform.to_string());
        let (key, fields) = kb.finish();
        let memory = Memory::new(&key, fields, None);
        env.extend(arg_env);
        env.extend(proxy_env);
        let v = self.cached_step(idx, inst, id, key, memory, started, || {
            let lower = self.snapshots(st)?;
            let _slot = self.runs.acquire();
            self.check_cancel()?;
            let req = crate::run::RunRequest {
                loc: &loc,
                id,
                argv: argv.clone(),
                env: env.clone(),
                cwd: workdir.clone(),
                user: user.clone(),
                network,
                insecure: security == SecurityMode::Insecure,
                mounts: &run.mounts,
                lower,
                stdin: stdin.clone(),
            };
            let layer = crate::run::execute(self, &req)?;
            Ok(StepValue { layer: Some(layer), created: Some(now_rfc3339(self.opts.source_date_epoch)) })
        })?;
        let created_by = format!("RUN {}{} # forge", st.scope.run_history_prefix(), argv.join(" "));
        self.push_layer(idx, st, key, v, created_by);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &self,
        idx: usize,
        inst: &Instruction,
        name: &str,
        common: &forge_parser::CopyCommon,
        from: Option<&str>,
        parents: bool,
        unpack: bool,
        st: &mut StageState,
        side_override: Option<(Arc<Context>, String)>,
    ) -> Result<(), SolveError> {
        let loc = location(inst);
        let id = self.step_id();
        let started = Instant::now();
        self.emit(Event::StepStarted { id, name: name.to_string() });
        let dest_view = self.view(st)?;
        let chown = match &common.chown {
            Some(c) => Some(crate::users::resolve_chown(&dest_view, c).map_err(|m| SolveError::step(&loc, m))?),
            None => None,
        };
        let chmod = match &common.chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).ok().filter(|v| *v <= 0o7777).ok_or_else(|| {
                SolveError::step(&loc, format!("invalid --chmod value {m:?}: expected an octal mode such as 0755"))
            })?),
            None => None,
        };
        let flags = CopyFlags { chown, chmod, parents, exclude: common.exclude.clone() };
        let workdir = st.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());

        // Pick the source side.
        let heredoc_dir;
        let from_state;
        let from_view;
        let ctx_holder;
        let mut from_key = String::from("context");
        let side = if let Some((ctx, key)) = side_override {
            ctx_holder = ctx;
            from_key = key;
            SourceSide::Context(&ctx_holder)
        } else if !common.heredocs.is_empty() {
            heredoc_dir = self.store.temp_dir("heredoc")?;
            for h in &common.heredocs {
                std::fs::write(heredoc_dir.path().join(&h.name), &h.content).map_err(|e| SolveError::io(heredoc_dir.path(), e))?;
            }
            ctx_holder = Arc::new(Context::walk(heredoc_dir.path(), Ignore::none())?);
            from_key = "heredoc".into();
            SourceSide::Context(&ctx_holder)
        } else if let Some(f) = from {
            match self.resolve_from(f, &loc, id)? {
                FromSource::State(s) => {
                    from_key = format!("state:{}", s.key);
                    from_state = s;
                    from_view = self.view(&from_state)?;
                    SourceSide::Image(&from_view)
                }
                FromSource::Dir(c) => {
                    ctx_holder = c;
                    from_key = format!("named-context:{f}");
                    SourceSide::Context(&ctx_holder)
                }
            }
        } else {
            ctx_holder = self.context()?;
            SourceSide::Context(&ctx_holder)
        };
        let ctx_for_hash = match &side {
            SourceSide::Context(c) => Some(*c),
            SourceSide::Image(_) => None,
        };
        // Heredoc sources are files in the heredoc directory, named after their delimiters.
        let heredoc_names: Vec<String>;
        let sources = if common.heredocs.is_empty() {
            &common.sources
        } else {
            heredoc_names = common.heredocs.iter().map(|h| h.name.clone()).collect();
            &heredoc_names
        };
        let mut items = copy::plan(&side, sources, &common.dest, &workdir, &flags, &dest_view, &loc)?;
        items.hash(ctx_for_hash)?;
        let digest = match (&side, from_key.starts_with("git:")) {
            // A kept `.git` differs on every checkout (index stamps, FETCH_HEAD); the commit in
            // `from_key` stands for it, as BuildKit keys git sources by commit.
            (SourceSide::Context(_), true) => items.digest(&|it| !it.context_rel().is_some_and(|r| Path::new(r).starts_with(".git")))?,
            _ => items.digest(&|_| true)?,
        };
        let keyword = inst.kind.keyword();
        let mut kb = KeyBuilder::new(if keyword == "ADD" { "add" } else { "copy" });
        kb.parent(Some(&st.key))
            .str("from", &from_key)
            .list("sources", &common.sources)
            .str("dest", &common.dest)
            .str("workdir", &workdir)
            .opt("chown", chown.map(|(u, g)| format!("{u}:{g}")).as_deref())
            .opt("chmod", chmod.map(|m| format!("{m:o}")).as_deref())
            .str("unpack", if unpack { "1" } else { "0" })
            .digest("content", &digest);
        let (key, fields) = kb.finish();
        let memory = Memory::new(&key, fields, Some(&items));
        let owner = chown.unwrap_or((0, 0));
        let v = self.cached_step(idx, inst, id, key, memory, started, || {
            let staging = self.store.temp_dir("copy")?;
            let fs_dir = staging.path().join("fs");
            std::fs::create_dir(&fs_dir).map_err(|e| SolveError::io(&fs_dir, e))?;
            if unpack {
                crate::add::materialize_with_unpack(&items, &fs_dir, &dest_view, owner, &loc)?;
            } else {
                let reuse = self.previous_copy(idx, inst);
                copy::materialize_reusing(&items, &fs_dir, &dest_view, owner, reuse.as_ref(), &|_| true)?;
            }
            let layer = crate::layers::commit_tree(self.store, &fs_dir, SourceKind::Tree, &self.layer_options(SourceKind::Tree))?;
            Ok(StepValue { layer: Some(layer), created: Some(now_rfc3339(self.opts.source_date_epoch)) })
        })?;
        let expanded = inst.kind.expand(st.scope.lexer(), &st.scope.env()).ok();
        let created_by = format!("{} # forge", expanded.as_ref().and_then(config::copy_history).unwrap_or_else(|| keyword.to_string()));
        self.push_layer(idx, st, key, v, created_by);
        Ok(())
    }

    /// The snapshot and file hashes of the last run of this COPY, if still in the store.
    fn previous_copy(&self, idx: usize, inst: &Instruction) -> Option<copy::Reuse> {
        #[derive(serde::Deserialize)]
        struct Prev {
            key: String,
            files: copy::FileTags,
        }
        let name = self.memory_name(idx, inst);
        let file = self.store.open_state(&name).ok()??;
        let prev: Prev = serde_json::from_reader(std::io::BufReader::new(file)).ok()?;
        let rec = self.store.cache_get(&prev.key).ok()??;
        let v: StepValue = serde_json::from_value(rec.value).ok()?;
        let snapshot = self.store.snapshot_path(&v.layer?.diff_id)?;
        Some(copy::Reuse { snapshot, files: prev.files })
    }

    /// What the sources of bind mounts contain, for the RUN's key: a content digest for
    /// context sources, the stage's key for stage sources.
    fn bind_keys(&self, mounts: &[forge_parser::MountSpec], loc: &Location) -> Result<Vec<String>, SolveError> {
        let mut out = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == forge_parser::MountKind::Bind) {
            let src = m.source.clone().unwrap_or_else(|| "/".into());
            let empty = LayeredView::new(vec![]);
            let ctx = match &m.from {
                None => self.context()?,
                Some(f) => match self.resolve_from(f, loc, 0)? {
                    FromSource::State(s) => {
                        out.push(format!("{f}:{}", s.key));
                        continue;
                    }
                    FromSource::Dir(c) => c,
                },
            };
            let mut items = copy::plan(&SourceSide::Context(&ctx), std::slice::from_ref(&src), "/", "/", &CopyFlags::default(), &empty, loc)?;
            items.hash(Some(&ctx))?;
            out.push(format!("{src}:{}", crate::key::hex32(&items.digest(&|_| true)?)));
        }
        Ok(out)
    }

    pub(crate) fn layer_options(&self, kind: SourceKind) -> LayerOptions {
        LayerOptions { compression: self.opts.compression.unwrap_or(Compression::None), source_date_epoch: self.opts.source_date_epoch, kind }
    }

    fn resolve_from(&self, f: &str, loc: &Location, id: usize) -> Result<FromSource, SolveError> {
        if let Some(NamedContext::Dir(d)) = self.opts.build_contexts.get(f) {
            return Ok(FromSource::Dir(self.named_context(f, d)?));
        }
        let lower = f.to_lowercase();
        let by_name = self.df.stages.iter().find(|s| s.name.as_deref() == Some(lower.as_str())).map(|s| s.index);
        let by_index = f.parse::<usize>().ok().filter(|&i| i < self.df.stages.len());
        if let Some(i) = by_name.or(by_index) {
            let s = self.slots[i].wait().ok_or(SolveError::Cancelled)?;
            return Ok(FromSource::State((*s).clone()));
        }
        let reference = match self.opts.build_contexts.get(f) {
            Some(NamedContext::Image(r)) => r.clone(),
            _ => f.to_string(),
        };
        let img = self.resolve_image(&reference, id).map_err(|e| SolveError::step(loc, e.to_string()))?;
        Ok(FromSource::State(self.image_state(&img)))
    }

    fn workdir_step(&self, idx: usize, inst: &Instruction, name: &str, w: &str, st: &mut StageState) -> Result<(), SolveError> {
        let current = st.config.config.working_dir.clone().unwrap_or_default();
        let wd = join_workdir(&current, w);
        st.config.config.working_dir = Some(wd.clone());
        let id = self.step_id();
        let started = Instant::now();
        self.emit(Event::StepStarted { id, name: name.to_string() });
        let view = self.view(st)?;
        if wd == "/" {
            self.emit(Event::StepDone { id, duration: started.elapsed(), cached: false });
            self.history(st, format!("WORKDIR {wd}"), true);
            return Ok(());
        }
        // BuildKit runs its mkdir for every WORKDIR but `/`: an existing directory gives an
        // empty layer (its metadata untouched), not an empty history entry.
        let exists = view.lookup(&wd, true).map(|e| e.is_dir()).unwrap_or(false);
        let owner = match st.config.config.user.as_deref().filter(|u| !u.is_empty()) {
            Some(u) => crate::users::resolve_chown(&view, u).map_err(|m| SolveError::step(&location(inst), m))?,
            None => (0, 0),
        };
        let mut kb = KeyBuilder::new("mkdir");
        kb.parent(Some(&st.key)).str("path", &wd).str("owner", &format!("{}:{}", owner.0, owner.1));
        let (key, fields) = kb.finish();
        let memory = Memory::new(&key, fields, None);
        let epoch = self.opts.source_date_epoch;
        let v = self.cached_step(idx, inst, id, key, memory, started, || {
            let staging = self.store.temp_dir("mkdir")?;
            let fs_dir = staging.path().join("fs");
            std::fs::create_dir(&fs_dir).map_err(|e| SolveError::io(&fs_dir, e))?;
            let now = epoch.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
            });
            // Symlinked directories on the way are followed (`WORKDIR /link/sub` makes
            // `/target/sub`), as BuildKit's mkdir does in the image root.
            let item = copy::CopyItem {
                dest: copy::resolve_dest_dirs(&view, &clean_abs(&wd)).into(),
                kind: crate::context::Kind::Dir,
                mode: 0o755,
                uid: owner.0,
                gid: owner.1,
                mtime: (now, 0),
                size: 0,
                origin: copy::Origin::Path(PathBuf::new().into()),
                link: None,
                hash: None,
                label: wd.as_str().into(),
                top: true,
            };
            if !exists {
                copy::materialize(&copy::CopyPlan::from_items(vec![item]), &fs_dir, &view, owner)?;
            }
            let layer = crate::layers::commit_tree(self.store, &fs_dir, SourceKind::Tree, &self.layer_options(SourceKind::Tree))?;
            Ok(StepValue { layer: Some(layer), created: Some(now_rfc3339(self.opts.source_date_epoch)) })
        })?;
        self.push_layer(idx, st, key, v, format!("WORKDIR {wd}"));
        Ok(())
    }

    pub(crate) fn build_context(&self) -> Result<Arc<Context>, SolveError> {
        self.context()
    }

    /// The merged view of a stage (by name or index) or an image, for RUN bind mounts.
    pub(crate) fn view_of(&self, from: &str, loc: &Location) -> Result<LayeredView, SolveError> {
        match self.resolve_from(from, loc, 0)? {
            FromSource::State(s) => self.view(&s),
            FromSource::Dir(c) => Ok(LayeredView::new(vec![c.root().to_path_buf()])),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    pub(crate) fn sandbox(&self) -> &Sandbox {
        self.sandbox
    }

    pub(crate) fn cancel_token(&self) -> &CancelToken {
        self.cancel
    }

    pub(crate) fn options(&self) -> &BuildOptions {
        self.opts
    }

    pub(crate) fn log(&self, id: usize, stream: LogStream, line: String) {
        self.emit(Event::Log { id, stream, line });
    }

    fn export(&self, st: &StageState) -> Result<BuildOutput, SolveError> {
        let mut config = st.config.clone();
        config.rootfs.diff_ids = st.layers.iter().map(|l| l.diff_id.clone()).collect();
        config.history = st.history.clone();
        config.created = Some(match self.opts.source_date_epoch {
            Some(e) => rfc3339(e),
            None => st.history.last().and_then(|h| h.created.clone()).unwrap_or_else(|| now_rfc3339(None)),
        });
        if !self.opts.labels.is_empty() {
            let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        for l in &st.layers {
            self.ensure_blob(l)?;
        }
        // Steps an imported cache served are now local records too, when their blob is here.
        for (key, v) in self.remote_hits.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            if v.layer.as_ref().map(|l| self.store.has_blob(&l.blob.digest)).unwrap_or(true) {
                self.record(&key, &v)?;
            }
        }
        // Layers this build's steps made (cached or not) follow the requested compression;
        // base-image layers keep theirs, as in BuildKit without force-compression. Without a
        // requested compression they stay as they were made (plain tars for new steps).
        let Some(compression) = self.opts.compression else {
            return self.finish_export(&config, st.layers.clone(), st);
        };
        let own: std::collections::HashSet<Digest> = self
            .step_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| st.step_keys.contains(&r.key))
            .filter_map(|r| r.layer.as_ref().map(|l| l.diff_id.clone()))
            .collect();
        let layers = st
            .layers
            .iter()
            .map(|l| {
                if own.contains(&l.diff_id) {
                    crate::layers::with_compression(self.store, l, compression)
                } else {
                    Ok(l.clone())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.finish_export(&config, layers, st)
    }

    fn finish_export(&self, config: &ImageConfig, layers: Vec<Layer>, st: &StageState) -> Result<BuildOutput, SolveError> {
        let (manifest_digest, manifest_size, manifest, config_digest) =
            crate::layers::write_image(self.store, config, &layers)?;
        let mut steps = std::mem::take(&mut *self.step_records.lock().unwrap_or_else(|p| p.into_inner()));
        for s in &mut steps {
            s.in_final_image = st.step_keys.contains(&s.key);
        }
        Ok(BuildOutput {
            manifest_digest,
            manifest_size,
            manifest,
            config: config.clone(),
            config_digest,
            steps,
            steps_run: self.steps_run.load(Ordering::Relaxed),
            steps_cached: self.steps_cached.load(Ordering::Relaxed),
        })
    }
}

enum FromSource {
    State(StageState),
    Dir(Arc<Context>),
}

/// What a step remembers of itself (its key, the fields the key was made of, and for COPY and
/// ADD the content tag of every file), before it is written.
pub(crate) struct Memory<'a> {
    key: String,
    fields: Vec<(String, String)>,
    items: Option<&'a copy::CopyPlan<'a>>,
}

impl<'a> Memory<'a> {
    fn new(key: &CacheKey, fields: Vec<(&str, String)>, items: Option<&'a copy::CopyPlan<'a>>) -> Memory<'a> {
        Memory { key: key.to_hex(), fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), items }
    }

    /// The whole memory, files map included (for `--explain` only).
    fn assemble(&self) -> StepMemory {
        let mut files = BTreeMap::new();
        if let Some(plan) = self.items {
            let _ = plan.for_each(&mut |it| {
                files.insert(it.label.to_string(), copy::content_tag(it));
                Ok(())
            });
        }
        StepMemory { key: self.key.clone(), fields: self.fields.clone(), files }
    }
}

/// A [`Memory`] as written: the same JSON as [`StepMemory`], its files streamed from the items.
#[derive(serde::Serialize)]
struct MemoryOut<'a> {
    key: &'a str,
    fields: &'a [(String, String)],
    files: copy::FilesOf<'a>,
}
