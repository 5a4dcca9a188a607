//! AST → typed instructions: BuildKit's `instructions` stage.
//!
//! Every node is checked the way BuildKit checks it (argument counts, flags and their values,
//! ONBUILD triggers, heredoc placement), and a few checks BuildKit only makes later, at build
//! time, are made here already when the value holds no `$VAR` (EXPOSE ports, `--chmod`,
//! durations, signals), so mistakes surface with a line and column before anything runs.

pub mod flags;
pub mod mount;
pub mod suggest;
pub mod values;

use crate::ast::{self, AstHeredoc, Node};
use crate::diagnostic::ParseError;
use crate::instructions::*;
use crate::span::Span;

use flags::FlagSet;
use suggest::closest;

/// Every instruction keyword, upper-case.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The flags each instruction accepts (used for "unknown flag" hints across instructions).
const FLAGS_BY_INSTRUCTION: &[(&str, &[&str])] = &[
    ("FROM", &["platform"]),
    ("RUN", &["mount", "network", "security"]),
    (
        "ADD",
        &[
            "chown",
            "chmod",
            "link",
            "checksum",
            "keep-git-dir",
            "exclude",
            "unpack",
        ],
    ),
    (
        "COPY",
        &["from", "chown", "chmod", "link", "parents", "exclude"],
    ),
    (
        "HEALTHCHECK",
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    ),
];

/// Parses a Dockerfile into stages of typed instructions.
///
/// ```
/// let df = forge_parser::parse_dockerfile("FROM alpine AS base\nRUN --network=none make\n").unwrap();
/// assert_eq!(df.stages[0].name.as_deref(), Some("base"));
/// let err = forge_parser::parse_dockerfile("FROM alpine\nRUNN make\n").unwrap_err();
/// assert_eq!(err.to_string(), "line 2:1: unknown instruction: RUNN (did you mean RUN?)");
/// ```
pub fn parse_dockerfile(source: &str) -> Result<Dockerfile, ParseError> {
    let tree = ast::parse(source)?;
    convert_ast(&tree)
}

/// The typed form of a node: a `FROM` starts a stage, everything else is an instruction.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    From(FromCommand),
    Instruction(Instruction),
}

/// A `FROM` line.
#[derive(Clone, Debug, PartialEq)]
pub struct FromCommand {
    pub base: String,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub platform: Option<String>,
    pub doc: Option<String>,
    pub span: Span,
    pub source: String,
}

/// Converts a whole tree, assembling stages.
pub fn convert_ast(tree: &ast::Ast) -> Result<Dockerfile, ParseError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &tree.children {
        match convert_node(node)? {
            Command::From(f) => {
                if let Some(name) = &f.name {
                    if let Some(prev) = stages.iter().find(|s| s.name.as_ref() == Some(name)) {
                        return Err(ParseError::new(
                            format!("duplicate stage name {}", ast::go_quote(name)),
                            f.span,
                        )
                        .with_help(format!(
                            "the name is already used by the stage on line {}",
                            prev.span.line
                        )));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: f.name,
                    base: f.base,
                    platform: f.platform,
                    span: f.span,
                    source: f.source,
                    instructions: Vec::new(),
                    doc: f.doc,
                });
            }
            Command::Instruction(ins) => match stages.last_mut() {
                Some(stage) => stage.instructions.push(ins),
                None => match ins.kind {
                    InstructionKind::Arg(args) => meta_args.push(ArgInstruction {
                        args,
                        span: ins.span,
                    }),
                    other => {
                        return Err(ParseError::new(
                            format!(
                                "no build stage in current context: {} comes before the first FROM",
                                other.keyword()
                            ),
                            node.keyword_span,
                        )
                        .with_help(
                            "a Dockerfile must start with FROM; only ARG may come before it",
                        ))
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError::new(
            "no FROM instruction: a Dockerfile needs at least one build stage",
            tree.span,
        )
        .with_help("add a FROM line, e.g. `FROM alpine`"));
    }
    Ok(Dockerfile {
        directives: tree.directives.clone(),
        meta_args,
        stages,
        warnings: tree.warnings.clone(),
    })
}

fn fail(span: Span, message: impl Into<String>) -> ParseError {
    ParseError::new(message, span)
}

/// Converts one node.
pub fn convert_node(node: &Node) -> Result<Command, ParseError> {
    let kw = node.keyword_span;
    let upper = node.keyword.to_uppercase();
    let instr = |kind: InstructionKind| {
        Ok(Command::Instruction(Instruction {
            kind,
            span: node.span,
            source: node.original.clone(),
        }))
    };
    match upper.as_str() {
        "FROM" => convert_from(node).map(Command::From),
        "RUN" => instr(InstructionKind::Run(convert_run(node)?)),
        "CMD" => {
            parse_flags(node, FlagSet::new())?;
            instr(InstructionKind::Cmd(CommandLine {
                form: command_form(node),
            }))
        }
        "ENTRYPOINT" => {
            parse_flags(node, FlagSet::new())?;
            instr(InstructionKind::Entrypoint(CommandLine {
                form: command_form(node),
            }))
        }
        "SHELL" => {
            parse_flags(node, FlagSet::new())?;
            if node.args.is_empty() {
                return Err(fail(kw, "SHELL requires at least one argument"));
            }
            if !node.json {
                return Err(fail(
                    node.span_of_text(&node.rest),
                    "SHELL requires the arguments to be in JSON form",
                )
                .with_help("write it as SHELL [\"executable\", \"parameters\"]"));
            }
            instr(InstructionKind::Shell(node.args.clone()))
        }
        "ENV" | "LABEL" => {
            let pairs = key_values(node, &upper)?;
            instr(if upper == "ENV" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            })
        }
        "MAINTAINER" => {
            let v = exactly_one(node, "MAINTAINER")?;
            instr(InstructionKind::Maintainer(v))
        }
        "USER" => instr(InstructionKind::User(exactly_one(node, "USER")?)),
        "WORKDIR" => instr(InstructionKind::Workdir(exactly_one(node, "WORKDIR")?)),
        "STOPSIGNAL" => {
            let v = exactly_one(node, "STOPSIGNAL")?;
            if !v.contains('$') {
                values::validate_signal(&v).map_err(|m| fail(node.span_of_text(&v), m))?;
            }
            instr(InstructionKind::StopSignal(v))
        }
        "EXPOSE" => {
            if node.args.is_empty() {
                return Err(fail(kw, "EXPOSE requires at least one argument"));
            }
            parse_flags(node, FlagSet::new())?;
            for spec in &node.args {
                if !spec.contains('$') {
                    values::parse_port_spec(spec).map_err(|m| {
                        let help = "ports are written PORT, PORT/PROTO or FROM-TO/PROTO, with PROTO tcp, udp or sctp";
                        fail(node.span_of_text(spec), m).with_help(help)
                    })?;
                }
            }
            let mut ports = node.args.clone();
            ports.sort();
            instr(InstructionKind::Expose(ports))
        }
        "VOLUME" => {
            if node.args.is_empty() {
                return Err(fail(kw, "VOLUME requires at least one argument"));
            }
            parse_flags(node, FlagSet::new())?;
            let mut vols = Vec::new();
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(fail(kw, "VOLUME specified can not be an empty string"));
                }
                vols.push(v.to_string());
            }
            instr(InstructionKind::Volume(vols))
        }
        "ARG" => {
            if node.args.is_empty() {
                return Err(fail(kw, "ARG requires at least one argument"));
            }
            parse_flags(node, FlagSet::new())?;
            let mut defs = Vec::new();
            for a in &node.args {
                let (name, default) = match a.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (a.clone(), None),
                };
                if name.is_empty() {
                    return Err(fail(node.span_of_text(a), "ARG names can not be blank"));
                }
                let doc = doc_comment(&node.comments, &name);
                defs.push(ArgDef { name, default, doc });
            }
            instr(InstructionKind::Arg(defs))
        }
        "ADD" => instr(InstructionKind::Add(convert_add(node)?)),
        "COPY" => instr(InstructionKind::Copy(convert_copy(node)?)),
        "ONBUILD" => instr(InstructionKind::Onbuild(convert_onbuild(node)?)),
        "HEALTHCHECK" => instr(InstructionKind::Healthcheck(convert_healthcheck(node)?)),
        _ => {
            let mut err = fail(kw, format!("unknown instruction: {}", node.raw_keyword));
            if let Some(s) = closest(&node.raw_keyword, KEYWORDS.iter().copied()) {
                err = err.with_help(format!("did you mean {s}?"));
            }
            Err(err)
        }
    }
}

/// BuildKit's doc-comment rule: a comment line `NAME text` documents `NAME`.
fn doc_comment(comments: &[String], name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .map(str::to_string)
}

/// Parses a node's flags against `set`, turning errors into located ParseErrors.
fn parse_flags(node: &Node, mut set: FlagSet) -> Result<FlagSet, ParseError> {
    match set.parse(&node.flags) {
        Ok(()) => Ok(set),
        Err(e) => {
            let span = e
                .index
                .map(|i| node.flag_span(i))
                .unwrap_or(node.keyword_span);
            let mut err = fail(span, e.message.clone());
            let help = e.help.clone().or_else(|| {
                let name = node
                    .flags
                    .get(e.index?)?
                    .trim_start_matches('-')
                    .split('=')
                    .next()?
                    .to_string();
                if !e.message.starts_with("unknown flag") {
                    return None;
                }
                let owners: Vec<&str> = FLAGS_BY_INSTRUCTION
                    .iter()
                    .filter(|(_, fl)| fl.contains(&name.as_str()))
                    .map(|(k, _)| *k)
                    .collect();
                if owners.is_empty() {
                    let accepted: Vec<String> = set.names().map(|n| format!("--{n}")).collect();
                    if accepted.is_empty() {
                        Some(format!("{} takes no flags", node.keyword.to_uppercase()))
                    } else {
                        Some(format!(
                            "{} accepts {}",
                            node.keyword.to_uppercase(),
                            accepted.join(", ")
                        ))
                    }
                } else {
                    Some(format!(
                        "--{name} is a flag of {}, not {}",
                        owners.join(" and "),
                        node.keyword.to_uppercase()
                    ))
                }
            });
            if let Some(h) = help {
                err = err.with_help(h);
            }
            Err(err)
        }
    }
}

fn exactly_one(node: &Node, name: &str) -> Result<String, ParseError> {
    if node.args.len() != 1 {
        return Err(fail(
            node.keyword_span,
            format!("{name} requires exactly one argument"),
        ));
    }
    parse_flags(node, FlagSet::new())?;
    Ok(node.args[0].clone())
}

/// Shell form joins the words with single spaces; exec form keeps the list.
pub fn handle_json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() {
        return Vec::new();
    }
    if json {
        return args.to_vec();
    }
    vec![args.join(" ")]
}

fn command_form(node: &Node) -> CmdForm {
    if node.json {
        CmdForm::Exec(node.args.clone())
    } else {
        CmdForm::Shell(node.args.join(" "))
    }
}

fn convert_from(node: &Node) -> Result<FromCommand, ParseError> {
    let kw = node.keyword_span;
    let args = &node.args;
    let name = match args.len() {
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_lowercase();
            if !valid_stage_name(&name) {
                return Err(fail(
                    node.span_of_text(&args[2]),
                    format!(
                        "invalid name for build stage: {}, name can't start with a number or contain symbols",
                        ast::go_quote(&args[2])
                    ),
                )
                .with_help("stage names start with a letter and contain only letters, digits, '-', '_' and '.'"));
            }
            Some(name)
        }
        1 => None,
        3 => {
            return Err(fail(
                node.span_of_text(&args[1]),
                "FROM requires either one or three arguments",
            )
            .with_help(format!("did you mean `FROM {} AS {}`?", args[0], args[2])))
        }
        _ => {
            return Err(fail(kw, "FROM requires either one or three arguments")
                .with_help("write `FROM image` or `FROM image AS name`"))
        }
    };
    let mut set = FlagSet::new();
    set.add_string("platform", "");
    let set = parse_flags(node, set)?;
    let doc = name.as_deref().and_then(|n| doc_comment(&node.comments, n));
    Ok(FromCommand {
        base: args[0].clone(),
        name,
        platform: set.opt_string("platform"),
        doc,
        span: node.span,
        source: node.original.trim().to_string(),
    })
}

/// `^[a-z][a-z0-9-_\.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn to_heredoc(h: &AstHeredoc, chomp_now: bool) -> Heredoc {
    let content = if chomp_now && h.chomp {
        ast::strip_leading_tabs(&h.content)
    } else {
        h.content.clone()
    };
    Heredoc {
        name: h.name.clone(),
        content,
        expand: h.expand,
        chomp: h.chomp,
    }
}

fn convert_run(node: &Node) -> Result<Run, ParseError> {
    let mut set = FlagSet::new();
    set.add_strings("mount")
        .add_string("network", "")
        .add_string("security", "");
    let set = parse_flags(node, set)?;
    if node.args.is_empty() && !node.json {
        return Err(
            fail(node.keyword_span, "RUN requires at least one argument")
                .with_help("give the command to run"),
        );
    }
    let mut mounts = Vec::new();
    let raw_mounts = set.strings("mount").to_vec();
    let mut ssh_index = 0;
    for value in &raw_mounts {
        let m = mount::parse_mount(value, true, ssh_index).map_err(|(msg, help)| {
            let span = node.span_of_text(value);
            let e = fail(span, format!("invalid --mount: {msg}"));
            match help {
                Some(h) => e.with_help(h),
                None => e,
            }
        })?;
        if m.kind == MountKind::Ssh {
            ssh_index += 1;
        }
        mounts.push(m);
    }
    let flag_span = |name: &str| {
        node.flags
            .iter()
            .position(|f| f.starts_with(&format!("--{name}=")))
            .map(|i| node.flag_span(i))
            .unwrap_or(node.keyword_span)
    };
    let network = match set.string("network") {
        "" => None,
        "default" => Some(NetworkMode::Default),
        "none" => Some(NetworkMode::None),
        "host" => Some(NetworkMode::Host),
        other => {
            let mut e = fail(
                flag_span("network"),
                format!("unsupported network mode {}", ast::go_quote(other)),
            );
            e = e.with_help(match closest(other, ["default", "none", "host"]) {
                Some(s) => format!("did you mean --network={s}?"),
                None => "use --network=default, none or host".to_string(),
            });
            return Err(e);
        }
    };
    let security = match set.string("security") {
        "" => None,
        "sandbox" => Some(SecurityMode::Sandbox),
        "insecure" => Some(SecurityMode::Insecure),
        other => {
            return Err(fail(
                flag_span("security"),
                format!("unsupported security mode {}", ast::go_quote(other)),
            )
            .with_help("use --security=sandbox or insecure"))
        }
    };
    Ok(Run {
        command: command_form(node),
        heredocs: node.heredocs.iter().map(|h| to_heredoc(h, false)).collect(),
        mounts,
        network,
        security,
        raw_mounts,
    })
}

fn copy_common(node: &Node, name: &str, set: &FlagSet) -> Result<CopyCommon, ParseError> {
    let kw = node.keyword_span;
    if node.args.len() < 2 {
        return Err(fail(
            kw,
            format!("{name} requires at least two arguments, but only one was provided. Destination could not be determined"),
        ));
    }
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    let is_heredoc = |w: &str| !node.json && matches!(ast::parse_heredoc_word(w), Ok(Some(_)));
    if is_heredoc(&dest) {
        return Err(fail(
            node.span_of_text(&dest),
            format!("{name} cannot accept a heredoc as a destination"),
        ));
    }
    let mut sources = Vec::new();
    let mut heredocs = Vec::new();
    let mut available = node.heredocs.iter();
    for src in srcs {
        if is_heredoc(src) {
            if let Some(h) = available.next() {
                heredocs.push(to_heredoc(h, true));
                continue;
            }
        }
        sources.push(src.clone());
    }
    let chmod = set.opt_string("chmod");
    if let Some(c) = &chmod {
        if !c.contains('$') {
            values::validate_chmod(c).map_err(|m| fail(flag_span(node, "chmod"), m))?;
        }
    }
    Ok(CopyCommon {
        sources,
        dest,
        heredocs,
        chown: set.opt_string("chown"),
        chmod,
        link: set.bool("link"),
        exclude: set.strings("exclude").to_vec(),
    })
}

fn flag_span(node: &Node, name: &str) -> Span {
    let prefix = format!("--{name}");
    node.flags
        .iter()
        .position(|f| f == &prefix || f.starts_with(&format!("{prefix}=")))
        .map(|i| node.flag_span(i))
        .unwrap_or(node.keyword_span)
}

fn convert_copy(node: &Node) -> Result<Copy, ParseError> {
    let mut set = FlagSet::new();
    set.add_string("from", "")
        .add_string("chown", "")
        .add_string("chmod", "")
        .add_bool("link", false)
        .add_bool("parents", false)
        .add_strings("exclude");
    let set = parse_flags(node, set)?;
    let common = copy_common(node, "COPY", &set)?;
    Ok(Copy {
        common,
        from: set.opt_string("from"),
        parents: set.bool("parents"),
    })
}

fn convert_add(node: &Node) -> Result<Add, ParseError> {
    let mut set = FlagSet::new();
    set.add_string("chown", "")
        .add_string("chmod", "")
        .add_bool("link", false)
        .add_string("checksum", "")
        .add_bool("keep-git-dir", false)
        .add_strings("exclude")
        .add_bool("unpack", false);
    let set = parse_flags(node, set)?;
    let common = copy_common(node, "ADD", &set)?;
    let checksum = set.opt_string("checksum");
    if let Some(c) = &checksum {
        if !c.contains('$') {
            values::validate_checksum(c).map_err(|m| fail(flag_span(node, "checksum"), m))?;
        }
    }
    Ok(Add {
        common,
        checksum,
        keep_git_dir: set.bool("keep-git-dir"),
        unpack: set.opt_bool("unpack"),
    })
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, ParseError> {
    let kw = node.keyword_span;
    if node.args.is_empty() {
        return Err(fail(kw, format!("{name} requires at least one argument")));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(fail(kw, format!("Bad input to {name}, too many arguments")));
    }
    parse_flags(node, FlagSet::new())?;
    let mut out = Vec::new();
    for t in node.args.chunks(3) {
        if t[0].is_empty() {
            return Err(fail(
                node.span_of_text(&format!("={}", t[1])),
                format!("{name} names can not be blank"),
            ));
        }
        out.push(KeyValue {
            key: t[0].clone(),
            value: t[1].clone(),
        });
    }
    Ok(out)
}

fn convert_onbuild(node: &Node) -> Result<OnBuild, ParseError> {
    let kw = node.keyword_span;
    let Some(inner) = &node.nested else {
        return Err(fail(kw, "ONBUILD requires at least one argument"));
    };
    parse_flags(node, FlagSet::new())?;
    let trigger = inner.raw_keyword.trim().to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(fail(
                inner.keyword_span,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ));
        }
        "MAINTAINER" | "FROM" => {
            return Err(fail(
                inner.keyword_span,
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
            ));
        }
        _ => {}
    }
    // Validate the trigger now (BuildKit only does when a child image runs it).
    let mut check = (**inner).clone();
    check.heredocs = node.heredocs.clone();
    check.span = node.span;
    convert_node(&check)?;
    let mut expression = node
        .original
        .trim_start_matches(char::is_whitespace)
        .to_string();
    if expression.len() >= 7
        && expression.is_char_boundary(7)
        && expression[..7].eq_ignore_ascii_case("ONBUILD")
    {
        expression = expression[7..]
            .trim_start_matches(char::is_whitespace)
            .to_string();
    }
    for h in &node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(OnBuild { expression })
}

/// Docker's minimum for non-zero healthcheck durations.
const MIN_HEALTH_DURATION_NS: i64 = 1_000_000;

fn convert_healthcheck(node: &Node) -> Result<Healthcheck, ParseError> {
    let kw = node.keyword_span;
    let Some(typ) = node.args.first() else {
        return Err(fail(kw, "HEALTHCHECK requires at least one argument"));
    };
    let typ_upper = typ.to_uppercase();
    let rest = &node.args[1..];
    if typ_upper == "NONE" {
        if !rest.is_empty() {
            return Err(fail(
                node.span_of_text(&rest[0]),
                "HEALTHCHECK NONE takes no arguments",
            ));
        }
        return Ok(Healthcheck::None);
    }
    let mut set = FlagSet::new();
    set.add_string("interval", "")
        .add_string("timeout", "")
        .add_string("start-period", "")
        .add_string("start-interval", "")
        .add_string("retries", "");
    let set = parse_flags(node, set)?;
    if typ_upper != "CMD" {
        let mut e = fail(
            node.span_of_text(typ),
            format!(
                "Unknown type {} in HEALTHCHECK (try CMD)",
                ast::go_quote(typ)
            ),
        );
        if let Some(s) = closest(&typ_upper, ["CMD", "NONE"]) {
            e = e.with_help(format!("did you mean {s}?"));
        }
        return Err(e);
    }
    let cmd = handle_json_args(rest, node.json);
    if cmd.is_empty() {
        return Err(fail(kw, "Missing command after HEALTHCHECK CMD"));
    }
    let mut test = vec![if node.json {
        "CMD".to_string()
    } else {
        "CMD-SHELL".to_string()
    }];
    test.extend(cmd);
    let duration = |name: &str| -> Result<Option<i64>, ParseError> {
        let v = set.string(name);
        if !set.is_used(name) {
            return Ok(None);
        }
        let span = flag_span(node, name);
        let d = values::parse_go_duration(v).map_err(|m| {
            fail(span, format!("invalid --{name}: {m}"))
                .with_help("durations look like 30s, 1m30s or 500ms")
        })?;
        if d != 0 && d < MIN_HEALTH_DURATION_NS {
            return Err(fail(
                span,
                format!("Interval {} cannot be less than 1ms", ast::go_quote(name)),
            ));
        }
        Ok(Some(d))
    };
    let interval = duration("interval")?;
    let timeout = duration("timeout")?;
    let start_period = duration("start-period")?;
    let start_interval = duration("start-interval")?;
    let retries = if set.is_used("retries") {
        let v = set.string("retries");
        let n: i64 = v
            .parse::<i32>()
            .map_err(|_| {
                fail(
                    flag_span(node, "retries"),
                    format!("invalid --retries {}: not a number", ast::go_quote(v)),
                )
            })?
            .into();
        if n < 0 {
            return Err(fail(
                flag_span(node, "retries"),
                format!("--retries cannot be negative ({n})"),
            ));
        }
        Some(n)
    } else {
        None
    };
    Ok(Healthcheck::Check {
        test,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> (String, usize, usize, Option<String>) {
        let e = parse_dockerfile(src).unwrap_err();
        let d = e.diagnostic;
        (d.message, d.span.line, d.span.column, d.help)
    }

    /// One line per case: source => (message, line, column, help).
    macro_rules! rejects {
        ($($name:ident: $src:expr => $msg:expr, $line:expr, $col:expr, $help:expr;)*) => {$(
            #[test]
            fn $name() {
                let got = err($src);
                let want: (&str, usize, usize, Option<&str>) = ($msg, $line, $col, $help);
                assert_eq!((got.0.as_str(), got.1, got.2, got.3.as_deref()), want);
            }
        )*};
    }

    rejects! {
        unknown_instruction: "FROM a\nRUNN x\n" => "unknown instruction: RUNN", 2, 1, Some("did you mean RUN?");
        unknown_lower: "FROM a\n  cpoy a b\n" => "unknown instruction: cpoy", 2, 3, Some("did you mean COPY?");
        unknown_flag_suggests: "FROM a\nCOPY --form=b x y\n" => "unknown flag: --form", 2, 6, Some("did you mean --from?");
        flag_of_other_instruction: "FROM a\nADD --from=b x y\n" => "unknown flag: --from", 2, 5, Some("--from is a flag of COPY, not ADD");
        flag_after_continuation: "FROM a\nRUN --network=none \\\n  --mnt=type=cache x\n" => "unknown flag: --mnt", 3, 3, Some("RUN accepts --mount, --network, --security");
        bad_chmod: "FROM a\nCOPY --chmod=99z x y\n" => "invalid chmod parameter \"99z\": must be an octal number (e.g. 0755) or a symbolic mode (e.g. u+x)", 2, 6, None;
        bad_interval: "FROM a\nHEALTHCHECK --interval=abc CMD true\n" => "invalid --interval: time: invalid duration \"abc\"", 2, 13, Some("durations look like 30s, 1m30s or 500ms");
        tiny_interval: "FROM a\nHEALTHCHECK --timeout=50ns CMD true\n" => "Interval \"timeout\" cannot be less than 1ms", 2, 13, None;
        negative_retries: "FROM a\nHEALTHCHECK --retries=-1 CMD true\n" => "--retries cannot be negative (-1)", 2, 13, None;
        bad_expose: "FROM a\nEXPOSE 80 80/xyz\n" => "invalid port: \"80/xyz\": invalid proto: xyz", 2, 11, Some("ports are written PORT, PORT/PROTO or FROM-TO/PROTO, with PROTO tcp, udp or sctp");
        duplicate_stage: "FROM a AS x\nFROM b AS X\n" => "duplicate stage name \"x\"", 2, 1, Some("the name is already used by the stage on line 1");
        bad_stage_name: "FROM a AS 1x\n" => "invalid name for build stage: \"1x\", name can't start with a number or contain symbols", 1, 11, Some("stage names start with a letter and contain only letters, digits, '-', '_' and '.'");
        from_two_args: "FROM a b\n" => "FROM requires either one or three arguments", 1, 1, Some("write `FROM image` or `FROM image AS name`");
        onbuild_onbuild: "FROM a\nONBUILD ONBUILD RUN x\n" => "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", 2, 9, None;
        onbuild_from: "FROM a\nONBUILD FROM b\n" => "FROM isn't allowed as an ONBUILD trigger", 2, 9, None;
        onbuild_maintainer: "FROM a\nonbuild maintainer me\n" => "MAINTAINER isn't allowed as an ONBUILD trigger", 2, 9, None;
        onbuild_checks_trigger: "FROM a\nONBUILD RUNN x\n" => "unknown instruction: RUNN", 2, 9, Some("did you mean RUN?");
        unterminated_heredoc: "FROM a\nRUN <<EOF\necho\n" => "unterminated heredoc EOF", 2, 1, Some("add a line holding only `EOF` to end the heredoc");
        missing_from: "ARG V=1\nRUN echo\nFROM a\n" => "no build stage in current context: RUN comes before the first FROM", 2, 1, Some("a Dockerfile must start with FROM; only ARG may come before it");
        only_args: "ARG V=1\n" => "no FROM instruction: a Dockerfile needs at least one build stage", 1, 1, Some("add a FROM line, e.g. `FROM alpine`");
        empty_file: "" => "file with no instructions", 1, 1, None;
        bad_mount_type: "FROM a\nRUN --mount=type=cahce,target=/x make\n" => "invalid --mount: unsupported mount type \"cahce\"", 2, 13, Some("did you mean type=cache?");
        bad_network: "FROM a\nRUN --network=nnone x\n" => "unsupported network mode \"nnone\"", 2, 5, Some("did you mean --network=none?");
        bad_security: "FROM a\nRUN --security=root x\n" => "unsupported security mode \"root\"", 2, 5, Some("use --security=sandbox or insecure");
        copy_heredoc_dest: "FROM a\nCOPY x <<EOF\nEOF\n" => "COPY cannot accept a heredoc as a destination", 2, 8, None;
        shell_not_json: "FROM a\nSHELL /bin/bash -c\n" => "SHELL requires the arguments to be in JSON form", 2, 7, Some("write it as SHELL [\"executable\", \"parameters\"]");
        cmd_takes_no_flags: "FROM a\nCMD --x ls\n" => "unknown flag: --x", 2, 5, Some("CMD takes no flags");
        bool_flag_value: "FROM a\nCOPY --link=yes a b\n" => "expecting boolean value for flag link, not: yes", 2, 6, None;
        bad_signal: "FROM a\nSTOPSIGNAL SIGTREM\n" => "invalid signal: SIGTREM (did you mean SIGTERM?)", 2, 12, None;
        bad_checksum: "FROM a\nADD --checksum=md5:x http://e/x /x\n" => "invalid checksum \"md5:x\": expected sha256:<64 hex digits> (or sha384/sha512, or a git commit id)", 2, 5, None;
        healthcheck_type: "FROM a\nHEALTHCHECK CDM true\n" => "Unknown type \"CDM\" in HEALTHCHECK (try CMD)", 2, 13, Some("did you mean CMD?");
        arg_blank: "FROM a\nARG =x\n" => "ARG names can not be blank", 2, 5, None;
        env_blank: "FROM a\nENV =x\n" => "ENV names can not be blank", 2, 5, None;
    }

    #[test]
    fn converts_a_full_dockerfile() {
        let src = "\
# syntax=docker/dockerfile:1
ARG BASE=alpine:3.19
FROM --platform=$BUILDPLATFORM ${BASE} AS Build
RUN --mount=type=cache,target=/root/.cache,sharing=locked \\
    --mount=type=secret,id=tok,env=TOKEN --network=none make
COPY --from=build --chown=1:1 --chmod=0644 --link --parents --exclude=*.md a b /dst/
ADD --checksum=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef --unpack=false --keep-git-dir https://e/x.tgz /x
HEALTHCHECK --interval=30s --retries=3 CMD [\"curl\", \"-f\", \"http://localhost/\"]
ONBUILD RUN echo hi
ENV A=1 B=\"two words\"
LABEL version 1.0
EXPOSE 8080 53/udp
STOPSIGNAL SIGTERM
ENTRYPOINT [\"/app\"]
CMD serve --port 80
FROM scratch
COPY <<-EOF /etc/motd
\thello
\tEOF
";
        let df = parse_dockerfile(src).unwrap();
        assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.meta_args[0].args[0].name, "BASE");
        let s = &df.stages[0];
        assert_eq!(
            (s.name.as_deref(), s.base.as_str(), s.platform.as_deref()),
            (Some("build"), "${BASE}", Some("$BUILDPLATFORM"))
        );
        let kinds: Vec<&str> = s.instructions.iter().map(|i| i.kind.keyword()).collect();
        assert_eq!(
            kinds,
            [
                "RUN",
                "COPY",
                "ADD",
                "HEALTHCHECK",
                "ONBUILD",
                "ENV",
                "LABEL",
                "EXPOSE",
                "STOPSIGNAL",
                "ENTRYPOINT",
                "CMD"
            ]
        );
        let InstructionKind::Run(run) = &s.instructions[0].kind else {
            panic!()
        };
        assert_eq!(run.mounts.len(), 2);
        assert_eq!(run.mounts[0].sharing, CacheSharing::Locked);
        assert_eq!(run.mounts[1].env.as_deref(), Some("TOKEN"));
        assert_eq!(run.network, Some(NetworkMode::None));
        assert_eq!(run.command, CmdForm::Shell("make".into()));
        assert_eq!(
            (s.instructions[0].span.line, s.instructions[0].span.end_line),
            (4, 5)
        );
        let InstructionKind::Copy(c) = &s.instructions[1].kind else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert!(c.common.link && c.parents);
        assert_eq!(c.common.sources, ["a", "b"]);
        assert_eq!(c.common.exclude, ["*.md"]);
        let InstructionKind::Add(a) = &s.instructions[2].kind else {
            panic!()
        };
        assert_eq!((a.unpack, a.keep_git_dir), (Some(false), true));
        let InstructionKind::Healthcheck(Healthcheck::Check {
            test,
            interval,
            retries,
            timeout,
            ..
        }) = &s.instructions[3].kind
        else {
            panic!()
        };
        assert_eq!(test, &["CMD", "curl", "-f", "http://localhost/"]);
        assert_eq!(
            (*interval, *retries, *timeout),
            (Some(30_000_000_000), Some(3), None)
        );
        let InstructionKind::Onbuild(o) = &s.instructions[4].kind else {
            panic!()
        };
        assert_eq!(o.expression, "RUN echo hi");
        let InstructionKind::Env(env) = &s.instructions[5].kind else {
            panic!()
        };
        assert_eq!(
            env[1],
            KeyValue {
                key: "B".into(),
                value: "\"two words\"".into()
            }
        );
        let InstructionKind::Label(l) = &s.instructions[6].kind else {
            panic!()
        };
        assert_eq!(
            l[0],
            KeyValue {
                key: "version".into(),
                value: "1.0".into()
            }
        );
        assert_eq!(
            s.instructions[7].kind,
            InstructionKind::Expose(vec!["53/udp".into(), "8080".into()])
        );
        let InstructionKind::Cmd(cmd) = &s.instructions[10].kind else {
            panic!()
        };
        assert_eq!(cmd.form, CmdForm::Shell("serve --port 80".into()));
        let InstructionKind::Copy(h) = &df.stages[1].instructions[0].kind else {
            panic!()
        };
        assert_eq!(h.common.heredocs[0].content, "hello\n");
        assert!(h.common.sources.is_empty());
    }

    #[test]
    fn healthcheck_none_and_shell() {
        let df =
            parse_dockerfile("FROM a\nHEALTHCHECK NONE\nHEALTHCHECK CMD curl -f x || exit 1\n")
                .unwrap();
        assert_eq!(
            df.stages[0].instructions[0].kind,
            InstructionKind::Healthcheck(Healthcheck::None)
        );
        let InstructionKind::Healthcheck(Healthcheck::Check { test, .. }) =
            &df.stages[0].instructions[1].kind
        else {
            panic!()
        };
        assert_eq!(test, &["CMD-SHELL", "curl -f x || exit 1"]);
    }

    #[test]
    fn run_heredoc_is_not_chomped() {
        let df = parse_dockerfile("FROM a\nRUN <<-EOF\n\techo hi\n\tEOF\n").unwrap();
        let InstructionKind::Run(r) = &df.stages[0].instructions[0].kind else {
            panic!()
        };
        assert_eq!(
            r.heredocs[0],
            Heredoc {
                name: "EOF".into(),
                content: "\techo hi\n".into(),
                expand: true,
                chomp: true
            }
        );
    }
}
