//! Typed instructions: what a Dockerfile means, before any variable is expanded.
//!
//! Strings here are the words as written (quotes and `$VAR`s intact) unless a field says
//! otherwise. [`InstructionKind::expand`] applies BuildKit's per-instruction expansion rules
//! once the planner knows the environment a step sees.

use crate::span::Span;

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq)]
pub struct Dockerfile {
    pub directives: Directives,
    /// `ARG`s before the first `FROM`: they are visible to `FROM` lines only, unless a stage
    /// declares them again.
    pub meta_args: Vec<ArgInstruction>,
    pub stages: Vec<Stage>,
    /// Non-fatal findings (empty continuation lines, deprecated syntax, …).
    pub warnings: Vec<crate::Diagnostic>,
}

/// Parser directives from the top of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directives {
    pub syntax: Option<String>,
    /// The escape character: `\` unless `# escape=` says `` ` ``.
    pub escape: char,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives { syntax: None, escape: '\\', check: None }
    }
}

/// `ARG` before the first `FROM`, kept with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgInstruction {
    pub args: Vec<ArgDef>,
    pub span: Span,
}

/// One build stage: a `FROM` line and the instructions up to the next one.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Position among the stages, from 0.
    pub index: usize,
    /// The `AS name`, lower-cased.
    pub name: Option<String>,
    /// The base image or stage name as written (may contain `$VAR` from meta args).
    pub base: String,
    /// `--platform` as written.
    pub platform: Option<String>,
    /// The span of the `FROM` line.
    pub span: Span,
    /// The `FROM` line's original text.
    pub source: String,
    pub instructions: Vec<Instruction>,
    /// A doc comment: the text after `# <name> ` in the comments right above the `FROM`.
    pub doc: Option<String>,
}

/// One instruction with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Instruction {
    pub kind: InstructionKind,
    pub span: Span,
    /// The instruction's original text, continuation lines joined as BuildKit's `Original`
    /// (used for history `created_by` and error messages).
    pub source: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum InstructionKind {
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    /// `SHELL ["executable", "params"…]` (exec form only).
    Shell(Vec<String>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Maintainer(String),
    /// Port specs as written (`80`, `53/udp`, `8000-8010/tcp`, `$PORT`).
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Arg(Vec<ArgDef>),
    Add(Add),
    Copy(Copy),
    Onbuild(OnBuild),
    Healthcheck(Healthcheck),
}

impl InstructionKind {
    /// The upper-case keyword, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Maintainer(_) => "MAINTAINER",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::User(_) => "USER",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

/// Shell form or exec (JSON) form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdForm {
    /// The command text, to be run by the stage's SHELL (default `/bin/sh -c`).
    Shell(String),
    /// The argv, run as given.
    Exec(Vec<String>),
}

/// `CMD` / `ENTRYPOINT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub form: CmdForm,
}

/// A heredoc attached to RUN, COPY or ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (without quotes or `-`).
    pub name: String,
    /// The body, with `<<-` tab stripping already applied for COPY/ADD.
    pub content: String,
    /// False when the delimiter was quoted: the body is then not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped.
    pub chomp: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub command: CmdForm,
    /// Heredocs referenced by the command line, in order.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<MountSpec>,
    /// `--network=default|none|host`.
    pub network: Option<NetworkMode>,
    /// `--security=sandbox|insecure`.
    pub security: Option<SecurityMode>,
    /// The `--mount` values as written; [`InstructionKind::expand`] parses them again after
    /// variable expansion (values holding `$` are validated only then).
    pub raw_mounts: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount=…`, with BuildKit's defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Where it appears in the container. Secrets default to `/run/secrets/<id>`, ssh to
    /// `/run/buildkit/ssh_agent.<n>`.
    pub target: Option<String>,
    /// Path inside `from` (or the context) to mount.
    pub source: Option<String>,
    /// A stage name/index or image to take `source` from.
    pub from: Option<String>,
    pub readonly: bool,
    /// Cache id (defaults to the target), secret id, ssh id.
    pub id: Option<String>,
    pub sharing: CacheSharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Secrets and ssh: fail when not provided.
    pub required: bool,
    /// Secrets: expose as this environment variable instead of (or as well as) a file.
    pub env: Option<String>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
}

/// `KEY=value` of ENV and LABEL. Both words are raw (quotes kept) until expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One name of an `ARG` with its optional default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDef {
    pub name: String,
    pub default: Option<String>,
    /// A doc comment: the text after `# <name> ` in the comments right above the `ARG`.
    pub doc: Option<String>,
}

/// Fields shared by COPY and ADD.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyCommon {
    /// Source paths as written. Heredoc sources (`COPY <<EOF /dst`) are not listed here but in
    /// `heredocs`, whose `name` is the file name they get under `dest`.
    pub sources: Vec<String>,
    pub dest: String,
    pub heredocs: Vec<Heredoc>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub exclude: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Copy {
    pub common: CopyCommon,
    /// `--from=stage|index|image`.
    pub from: Option<String>,
    pub parents: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Add {
    pub common: CopyCommon,
    /// `--checksum=sha256:…` for URL and git sources.
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// `--unpack=true|false`; `None` means the default (unpack local archives only).
    pub unpack: Option<bool>,
}

/// `ONBUILD <instruction>`: the trigger is kept as text (it goes into the image config), and
/// parsed for validation.
#[derive(Clone, Debug, PartialEq)]
pub struct OnBuild {
    pub expression: String,
}

/// `HEALTHCHECK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Check {
        /// `CMD-SHELL <text>` or `CMD <argv>` as Docker stores it in `Test`.
        test: Vec<String>,
        /// Durations in nanoseconds; `None` when not given.
        interval: Option<i64>,
        timeout: Option<i64>,
        start_period: Option<i64>,
        start_interval: Option<i64>,
        retries: Option<i64>,
    },
}
