//! Dockerfile checks: the parse error (if any) plus warnings about valid but questionable input.
//!
//! Rule names follow BuildKit's build checks where one exists:
//!
//! | rule | finds |
//! |---|---|
//! | `NoEmptyContinuation` | a blank line inside a `\` continuation |
//! | `MaintainerDeprecated` | `MAINTAINER` (use `LABEL org.opencontainers.image.authors=…`) |
//! | `UnpinnedBaseImage` | `FROM image` without a tag, or with `:latest` (not `scratch`, stage names or `$VAR` bases) |
//! | `SecretsUsedInArgOrEnv` | ARG/ENV names such as `*_TOKEN`, `*PASSWORD*`, `*_KEY`, `*SECRET*` |
//! | `JSONArgsRecommended` | CMD/ENTRYPOINT in shell form |
//! | `StageNameCasing` | a stage name that is not lower-case |
//! | `FromAsCasing` | `FROM` and `AS` written in different cases |
//!
//! A `# check=skip=RuleA,RuleB` (or `skip=all`) directive drops those warnings, and
//! `# check=error=true` reports the remaining ones as errors, as BuildKit's build checks do.

use crate::ast::{self, Node};
use crate::diagnostic::Diagnostic;

pub const RULE_MAINTAINER: &str = "MaintainerDeprecated";
pub const RULE_UNPINNED: &str = "UnpinnedBaseImage";
pub const RULE_SECRETS: &str = "SecretsUsedInArgOrEnv";
pub const RULE_JSON_ARGS: &str = "JSONArgsRecommended";
pub const RULE_STAGE_CASING: &str = "StageNameCasing";
pub const RULE_FROM_AS_CASING: &str = "FromAsCasing";

/// Checks a Dockerfile: the parse error first (if any), then warnings in source order.
///
/// ```
/// let found = forge_parser::lint("FROM ubuntu\nMAINTAINER me\n");
/// let rules: Vec<_> = found.iter().filter_map(|d| d.rule).collect();
/// assert_eq!(rules, ["UnpinnedBaseImage", "MaintainerDeprecated"]);
/// ```
pub fn lint(source: &str) -> Vec<Diagnostic> {
    let tree = match ast::parse(source) {
        Ok(t) => t,
        Err(e) => return vec![e.diagnostic],
    };
    let mut warnings = tree.warnings.clone();
    let mut stage_names: Vec<String> = Vec::new();
    for node in &tree.children {
        check_node(node, &mut stage_names, &mut warnings);
    }
    let policy = CheckPolicy::from_directive(tree.directives.check.as_deref());
    warnings.retain(|d| !policy.skips(d.rule));
    if policy.error {
        for w in &mut warnings {
            w.severity = crate::diagnostic::Severity::Error;
        }
    }
    warnings.sort_by_key(|d| (d.span.line, d.span.column));
    let mut out = Vec::new();
    if let Err(e) = crate::convert::convert_ast(&tree) {
        out.push(e.diagnostic);
    }
    out.extend(warnings);
    out
}

/// The `# check=skip=<rules>|all;error=true` directive, as BuildKit reads it.
#[derive(Debug, Default, PartialEq, Eq)]
struct CheckPolicy {
    skip_all: bool,
    skip: Vec<String>,
    /// Report every warning as an error.
    error: bool,
}

impl CheckPolicy {
    fn from_directive(value: Option<&str>) -> CheckPolicy {
        let mut p = CheckPolicy::default();
        for part in value.unwrap_or("").split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            p.skip_all = true;
                        } else {
                            p.skip.push(rule.to_ascii_lowercase());
                        }
                    }
                }
                "error" => p.error = v.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        p
    }

    fn skips(&self, rule: Option<&str>) -> bool {
        match rule {
            Some(r) => self.skip_all || self.skip.iter().any(|s| s.eq_ignore_ascii_case(r)),
            None => false,
        }
    }
}

fn check_node(node: &Node, stage_names: &mut Vec<String>, out: &mut Vec<Diagnostic>) {
    match node.keyword.as_str() {
        "from" => check_from(node, stage_names, out),
        "maintainer" => out.push(
            Diagnostic::warning(
                RULE_MAINTAINER,
                "Maintainer instruction is deprecated in favor of using label",
                node.keyword_span,
            )
            .with_help(format!(
                "use LABEL org.opencontainers.image.authors={}",
                ast::go_quote(node.args.first().map(String::as_str).unwrap_or(""))
            )),
        ),
        "arg" => {
            for word in &node.args {
                let name = word.split('=').next().unwrap_or("");
                check_secret_name(node, "ARG", name, out);
            }
        }
        "env" => {
            for triple in node.args.chunks(3) {
                check_secret_name(node, "ENV", &triple[0], out);
            }
        }
        "cmd" | "entrypoint" if !node.json && !node.args.is_empty() => {
            let kw = node.keyword.to_uppercase();
            let words: Vec<String> = node
                .rest
                .split_whitespace()
                .map(|w| format!("\"{w}\""))
                .collect();
            out.push(
                Diagnostic::warning(
                    RULE_JSON_ARGS,
                    format!("JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"),
                    node.span_of_text(&node.rest),
                )
                .with_help(format!("write it as {kw} [{}]", words.join(", "))),
            );
        }
        _ => {}
    }
}

fn check_from(node: &Node, stage_names: &mut Vec<String>, out: &mut Vec<Diagnostic>) {
    let Some(base) = node.args.first() else {
        return;
    };
    let lower = base.to_lowercase();
    let is_stage = stage_names.contains(&lower);
    if !is_stage && !base.contains('$') && lower != "scratch" {
        let last = base.rsplit('/').next().unwrap_or(base);
        let digest = base.contains('@');
        let tag = last.split_once(':').map(|(_, t)| t);
        let message = match (digest, tag) {
            (true, _) => None,
            (false, None) => Some(format!(
                "base image {base} has no tag, so it means :latest and can change at any time"
            )),
            (false, Some("latest")) => Some(format!(
                "base image {base} uses the :latest tag, which can change at any time"
            )),
            _ => None,
        };
        if let Some(m) = message {
            out.push(
                Diagnostic::warning(RULE_UNPINNED, m, node.span_of_text(base))
                    .with_help("pin a version tag (e.g. alpine:3.20) or a digest (@sha256:…) for repeatable builds"),
            );
        }
    }
    if node.args.len() == 3 && node.args[1].eq_ignore_ascii_case("as") {
        let name = &node.args[2];
        if name.chars().any(|c| c.is_uppercase()) {
            out.push(
                Diagnostic::warning(
                    RULE_STAGE_CASING,
                    format!("Stage name '{name}' should be lowercase"),
                    node.span_of_text(name),
                )
                .with_help(format!("write it as {}", name.to_lowercase())),
            );
        }
        let as_word = &node.args[1];
        let kw_upper = node.raw_keyword == node.raw_keyword.to_uppercase();
        let kw_lower = node.raw_keyword == node.raw_keyword.to_lowercase();
        let as_upper = as_word == "AS";
        let as_lower = as_word == "as";
        if (kw_upper && !as_upper) || (kw_lower && !as_lower) {
            out.push(Diagnostic::warning(
                RULE_FROM_AS_CASING,
                format!(
                    "'{as_word}' and '{}' keywords' casing do not match",
                    node.raw_keyword
                ),
                node.span_of_text(&format!(" {as_word} ")),
            ));
        }
        stage_names.push(name.to_lowercase());
    }
}

/// BuildKit-style secret detection on a variable name.
fn looks_secret(name: &str) -> bool {
    let upper = name.to_uppercase();
    upper.ends_with("_TOKEN")
        || upper == "TOKEN"
        || upper.contains("PASSWORD")
        || upper.ends_with("_KEY")
        || upper.contains("SECRET")
}

fn check_secret_name(node: &Node, kw: &str, name: &str, out: &mut Vec<Diagnostic>) {
    if !looks_secret(name) {
        return;
    }
    out.push(
        Diagnostic::warning(
            RULE_SECRETS,
            format!("Do not use ARG or ENV instructions for sensitive data ({kw} {})", ast::go_quote(name)),
            node.span_of_text(name),
        )
        .with_help("values of ARG and ENV end up in the image history; use RUN --mount=type=secret instead"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Severity;

    /// `(rule or "error", line, column)` of every finding.
    fn findings(src: &str) -> Vec<(&'static str, usize, usize)> {
        lint(src)
            .iter()
            .map(|d| {
                (
                    if d.severity == Severity::Error {
                        "error"
                    } else {
                        d.rule.unwrap_or("?")
                    },
                    d.span.line,
                    d.span.column,
                )
            })
            .collect()
    }

    macro_rules! lints {
        ($($name:ident: $src:expr => [$($rule:expr, $line:expr, $col:expr);* $(;)?];)*) => {$(
            #[test]
            fn $name() {
                let want: Vec<(&str, usize, usize)> = vec![$(($rule, $line, $col)),*];
                assert_eq!(findings($src), want);
            }
        )*};
    }

    lints! {
        clean: "FROM alpine:3.20 AS build\nRUN make\nFROM build\nCMD [\"app\"]\n" => [];
        empty_continuation: "FROM a:1\nRUN a \\\n\n  b\n" => ["NoEmptyContinuation", 2, 1];
        maintainer: "FROM a:1\nMAINTAINER me\n" => ["MaintainerDeprecated", 2, 1];
        untagged: "FROM ubuntu\n" => ["UnpinnedBaseImage", 1, 6];
        latest: "FROM docker.io/library/ubuntu:latest\n" => ["UnpinnedBaseImage", 1, 6];
        registry_port_is_not_a_tag: "FROM localhost:5000/app\n" => ["UnpinnedBaseImage", 1, 6];
        tagged_registry_port: "FROM localhost:5000/app:1.2\n" => [];
        digest_is_pinned: "FROM ubuntu@sha256:0123\n" => [];
        scratch_stage_and_var_skipped: "ARG B=x\nFROM scratch AS s\nFROM s\nFROM ${B}\n" => [];
        secrets_in_arg_and_env: "FROM a:1\nARG GITHUB_TOKEN\nARG VERSION=1\nENV DB_PASSWORD=x API_KEY=y\nENV MY_SECRET_THING z\n"
            => ["SecretsUsedInArgOrEnv", 2, 5; "SecretsUsedInArgOrEnv", 4, 5; "SecretsUsedInArgOrEnv", 4, 19; "SecretsUsedInArgOrEnv", 5, 5];
        not_secrets: "FROM a:1\nARG KEYBOARD=1\nENV TOKENIZER=x MONKEY=y\n" => [];
        shell_form_cmd: "FROM a:1\nCMD serve --port 80\nENTRYPOINT [\"x\"]\nENTRYPOINT run\n" => ["JSONArgsRecommended", 2, 5; "JSONArgsRecommended", 4, 12];
        stage_casing: "FROM a:1 AS Build\n" => ["StageNameCasing", 1, 13];
        from_as_casing: "FROM a:1 as b\n" => ["FromAsCasing", 1, 9];
        lowercase_from_as_ok: "from a:1 as b\n" => [];
        parse_error_first: "FROM a\nRUNN x\n" => ["error", 2, 1; "UnpinnedBaseImage", 1, 6];
        lexer_error_only: "FROM a\nRUN <<EOF\n" => ["error", 2, 1];
        check_skip_listed: "# check=skip=JSONArgsRecommended,maintainerdeprecated\nFROM a:1\nMAINTAINER me\nCMD x\nFROM b\n" => ["UnpinnedBaseImage", 5, 6];
        check_skip_all: "# check=skip=all\nFROM a\nMAINTAINER me\n" => [];
        check_error_promotes: "# check=error=true\nFROM a:1\nMAINTAINER me\n" => ["error", 3, 1];
    }

    #[test]
    fn messages() {
        let d = lint("FROM a:1\nMAINTAINER Jane <j@x>\nCMD run it\n");
        assert_eq!(
            d[0].help.as_deref(),
            Some("use LABEL org.opencontainers.image.authors=\"Jane <j@x>\"")
        );
        assert_eq!(
            d[1].help.as_deref(),
            Some("write it as CMD [\"run\", \"it\"]")
        );
    }
}

#[cfg(test)]
mod robustness {
    use crate::shell::Lexer;

    const SAMPLE: &str = "# syntax=docker/dockerfile:1\n# escape=\\\nARG B=alpine\nFROM --platform=$P ${B}:3 AS Build\n\
RUN --mount=type=cache,target=/c,sharing=locked \\\n  --network=none <<-EOF bash\n\techo \"$X\" 'y' \\\\\n\tEOF\n\
COPY --from=build --chmod=0755 <<A <<'B' src/ /dst/\na\nA\nb\nB\nONBUILD ADD --checksum=$SUM x y\n\
HEALTHCHECK --interval=1s CMD [\"a\", \"\\u00e9\"]\nENV K=\"v w\" J=x\\ y\nLABEL a b\nEXPOSE 80/udp 1-3\nCMD x\n";

    /// Deterministic mutations of a feature-rich Dockerfile: every entry point must return,
    /// never panic. (The cargo-fuzz target in `fuzz/` does the same at a much larger scale.)
    #[test]
    fn mutated_inputs_never_panic() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = "\\`\"'$#<-=[]{},: \t\n\rAEFNORU0-9aé\u{a0}"
            .chars()
            .collect();
        let env: Vec<(String, String)> = vec![("X".into(), "1".into())];
        if let Err(e) = crate::parse_dockerfile(SAMPLE) {
            panic!("the unmutated sample must parse: {e}");
        }
        for _ in 0..2000 {
            let mut chars: Vec<char> = SAMPLE.chars().collect();
            for _ in 0..(next() % 6 + 1) {
                let pos = (next() as usize) % (chars.len() + 1);
                match next() % 3 {
                    0 if pos < chars.len() => {
                        chars.remove(pos);
                    }
                    1 if pos < chars.len() => {
                        chars[pos] = alphabet[(next() as usize) % alphabet.len()]
                    }
                    _ => chars.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let text: String = chars.into_iter().collect();
            let _ = crate::ast::parse(&text).map(|t| t.dump());
            let _ = super::lint(&text);
            if let Ok(df) = crate::parse_dockerfile(&text) {
                let lex = Lexer::new(df.directives.escape);
                for ins in df.stages.iter().flat_map(|s| &s.instructions) {
                    let _ = ins.kind.expand(&lex, &env);
                }
            }
        }
    }
}
