//! Per-instruction variable expansion, following BuildKit's rules for which words expand.
//!
//! | instruction | expanded |
//! |---|---|
//! | ENV, LABEL | keys and values (one word each, no splitting) |
//! | ARG | names and defaults |
//! | COPY, ADD | sources, destination, `--from`, `--chown`, `--chmod`, `--exclude`, `--checksum`; heredoc bodies whose delimiter was not quoted (quotes in the body are kept) |
//! | EXPOSE | each spec, split into words after expansion |
//! | USER, WORKDIR, STOPSIGNAL, VOLUME | each word |
//! | RUN | only the `--mount` values (the command is left to the shell) |
//! | CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER, ONBUILD | nothing |
//!
//! Values that could not be validated at parse time because they held a `$VAR` (ports,
//! `--chmod`, `--checksum`, signals, mount options) are validated here, after expansion.

use crate::convert::{mount, values};
use crate::instructions::*;
use crate::shell::{EnvLookup, ExpandError, Lexer};

fn invalid(message: String) -> ExpandError {
    ExpandError { message, offset: 0 }
}

impl InstructionKind {
    /// Expands the words BuildKit expands for this instruction, in the environment `env`.
    ///
    /// ```
    /// use forge_parser::{parse_dockerfile, shell::Lexer, InstructionKind};
    ///
    /// let df = parse_dockerfile("FROM a\nWORKDIR /srv/$APP\n").unwrap();
    /// let env = vec![("APP".to_string(), "web".to_string())];
    /// let kind = df.stages[0].instructions[0].kind.expand(&Lexer::new('\\'), &env).unwrap();
    /// assert_eq!(kind, InstructionKind::Workdir("/srv/web".into()));
    /// ```
    pub fn expand(&self, lex: &Lexer, env: &dyn EnvLookup) -> Result<InstructionKind, ExpandError> {
        let word = |w: &str| lex.process_word(w, env);
        let opt = |w: &Option<String>| -> Result<Option<String>, ExpandError> {
            w.as_deref().map(word).transpose()
        };
        let list = |ws: &[String]| -> Result<Vec<String>, ExpandError> {
            ws.iter().map(|w| word(w)).collect()
        };
        Ok(match self {
            InstructionKind::Env(kvs) => InstructionKind::Env(expand_kvs(kvs, &word)?),
            InstructionKind::Label(kvs) => InstructionKind::Label(expand_kvs(kvs, &word)?),
            InstructionKind::Arg(args) => InstructionKind::Arg(
                args.iter()
                    .map(|a| {
                        Ok(ArgDef {
                            name: word(&a.name)?,
                            default: opt(&a.default)?,
                            doc: a.doc.clone(),
                        })
                    })
                    .collect::<Result<_, ExpandError>>()?,
            ),
            InstructionKind::User(u) => InstructionKind::User(word(u)?),
            InstructionKind::Workdir(w) => InstructionKind::Workdir(word(w)?),
            InstructionKind::StopSignal(s) => {
                let s = word(s)?;
                values::validate_signal(&s).map_err(invalid)?;
                InstructionKind::StopSignal(s)
            }
            InstructionKind::Volume(v) => InstructionKind::Volume(list(v)?),
            InstructionKind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    for spec in lex.process_words(p, env)? {
                        values::parse_port_spec(&spec).map_err(invalid)?;
                        out.push(spec);
                    }
                }
                InstructionKind::Expose(out)
            }
            InstructionKind::Copy(c) => InstructionKind::Copy(Copy {
                common: expand_common(&c.common, lex, env)?,
                from: opt(&c.from)?,
                parents: c.parents,
            }),
            InstructionKind::Add(a) => {
                let checksum = opt(&a.checksum)?;
                if let Some(c) = &checksum {
                    values::validate_checksum(c).map_err(invalid)?;
                }
                InstructionKind::Add(Add {
                    common: expand_common(&a.common, lex, env)?,
                    checksum,
                    keep_git_dir: a.keep_git_dir,
                    unpack: a.unpack,
                })
            }
            InstructionKind::Run(r) => {
                let mut run = r.clone();
                let mut ssh_index = 0;
                run.mounts = Vec::with_capacity(r.raw_mounts.len());
                for raw in &r.raw_mounts {
                    let expanded = word(raw)?;
                    let m = mount::parse_mount(&expanded, false, ssh_index).map_err(
                        |(msg, help)| {
                            invalid(match help {
                                Some(h) => format!("invalid --mount: {msg} ({h})"),
                                None => format!("invalid --mount: {msg}"),
                            })
                        },
                    )?;
                    if m.kind == MountKind::Ssh {
                        ssh_index += 1;
                    }
                    run.mounts.push(m);
                }
                InstructionKind::Run(run)
            }
            InstructionKind::Cmd(_)
            | InstructionKind::Entrypoint(_)
            | InstructionKind::Shell(_)
            | InstructionKind::Healthcheck(_)
            | InstructionKind::Maintainer(_)
            | InstructionKind::Onbuild(_) => self.clone(),
        })
    }
}

fn expand_kvs(
    kvs: &[KeyValue],
    word: &dyn Fn(&str) -> Result<String, ExpandError>,
) -> Result<Vec<KeyValue>, ExpandError> {
    kvs.iter()
        .map(|kv| {
            Ok(KeyValue {
                key: word(&kv.key)?,
                value: word(&kv.value)?,
            })
        })
        .collect()
}

fn expand_common(
    c: &CopyCommon,
    lex: &Lexer,
    env: &dyn EnvLookup,
) -> Result<CopyCommon, ExpandError> {
    let word = |w: &str| lex.process_word(w, env);
    let chmod = c.chmod.as_deref().map(word).transpose()?;
    if let Some(m) = &chmod {
        values::validate_chmod(m).map_err(invalid)?;
    }
    // Heredoc bodies keep their quotes: only `$` expansions and escapes are processed.
    let body_lex = Lexer::new('\\').skip_process_quotes(true);
    let heredocs = c
        .heredocs
        .iter()
        .map(|h| {
            let content = if h.expand {
                body_lex.process_word(&h.content, env)?
            } else {
                h.content.clone()
            };
            Ok(Heredoc {
                content,
                ..h.clone()
            })
        })
        .collect::<Result<_, ExpandError>>()?;
    Ok(CopyCommon {
        sources: c
            .sources
            .iter()
            .map(|s| word(s))
            .collect::<Result<_, _>>()?,
        dest: word(&c.dest)?,
        heredocs,
        chown: c.chown.as_deref().map(word).transpose()?,
        chmod,
        link: c.link,
        exclude: c
            .exclude
            .iter()
            .map(|s| word(s))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use crate::{parse_dockerfile, shell::Lexer, InstructionKind};

    fn expand_first(src: &str, env: &[(&str, &str)]) -> Result<InstructionKind, String> {
        let df = parse_dockerfile(&format!("FROM a\n{src}\n")).map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        df.stages[0].instructions[0]
            .kind
            .expand(&Lexer::new('\\'), &env)
            .map_err(|e| e.message)
    }

    fn debug(src: &str, env: &[(&str, &str)]) -> String {
        match expand_first(src, env) {
            Ok(k) => format!("{k:?}"),
            Err(e) => format!("ERR {e}"),
        }
    }

    /// One line per case: instruction, environment => Debug of the expanded instruction (or ERR).
    macro_rules! expands {
        ($($name:ident: $src:expr, $env:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(debug($src, &$env), $want);
            }
        )*};
    }

    expands! {
        env_keys_and_values: "ENV A=$X B=\"${X} y\"", [("X", "1")] => "Env([KeyValue { key: \"A\", value: \"1\" }, KeyValue { key: \"B\", value: \"1 y\" }])";
        env_legacy_keeps_spaces: "ENV A $X  z", [("X", "1")] => "Env([KeyValue { key: \"A\", value: \"1  z\" }])";
        label: "LABEL \"$K\"=v", [("K", "k")] => "Label([KeyValue { key: \"k\", value: \"v\" }])";
        arg_default: "ARG V=${X:-d}", [] => "Arg([ArgDef { name: \"V\", default: Some(\"d\"), doc: None }])";
        user: "USER $U:$G", [("U", "app"), ("G", "staff")] => "User(\"app:staff\")";
        workdir: "WORKDIR /a/${D}", [("D", "b")] => "Workdir(\"/a/b\")";
        volume: "VOLUME $V /x", [("V", "/data")] => "Volume([\"/data\", \"/x\"])";
        expose_splits_words: "EXPOSE $PORTS", [("PORTS", "80 443/tcp")] => "Expose([\"80\", \"443/tcp\"])";
        expose_validated_after: "EXPOSE $P", [("P", "80/xyz")] => "ERR invalid port: \"80/xyz\": invalid proto: xyz";
        stopsignal: "STOPSIGNAL $S", [("S", "SIGKILL")] => "StopSignal(\"SIGKILL\")";
        stopsignal_validated_after: "STOPSIGNAL $S", [("S", "nope")] => "ERR invalid signal: nope";
        cmd_untouched: "CMD echo $HOME", [("HOME", "/root")] => "Cmd(CommandLine { form: Shell(\"echo $HOME\") })";
        run_command_untouched: "RUN echo $X", [("X", "1")] => "Run(Run { command: Shell(\"echo $X\"), heredocs: [], mounts: [], network: None, security: None, raw_mounts: [] })";
        healthcheck_untouched: "HEALTHCHECK CMD [\"$X\"]", [("X", "1")] => "Healthcheck(Check { test: [\"CMD\", \"$X\"], interval: None, timeout: None, start_period: None, start_interval: None, retries: None })";
        maintainer_untouched: "MAINTAINER $X", [("X", "1")] => "Maintainer(\"$X\")";
        copy_fields: "COPY --from=$S --chown=$U --chmod=$M --exclude=$E $SRC ${DST}/", [("S", "build"), ("U", "1"), ("M", "755"), ("E", "*.md"), ("SRC", "a"), ("DST", "/d")]
            => "Copy(Copy { common: CopyCommon { sources: [\"a\"], dest: \"/d/\", heredocs: [], chown: Some(\"1\"), chmod: Some(\"755\"), link: false, exclude: [\"*.md\"] }, from: Some(\"build\"), parents: false })";
        chmod_validated_after: "COPY --chmod=$M a b", [("M", "9x")] => "ERR invalid chmod parameter \"9x\": must be an octal number (e.g. 0755) or a symbolic mode (e.g. u+x)";
        copy_heredoc_keeps_quotes: "COPY <<EOF /f\n\"$X\" '$X'\nEOF", [("X", "1")] => "Copy(Copy { common: CopyCommon { sources: [], dest: \"/f\", heredocs: [Heredoc { name: \"EOF\", content: \"\\\"1\\\" '1'\\n\", expand: true, chomp: false }], chown: None, chmod: None, link: false, exclude: [] }, from: None, parents: false })";
        copy_quoted_heredoc_not_expanded: "COPY <<'EOF' /f\n$X\nEOF", [("X", "1")] => "Copy(Copy { common: CopyCommon { sources: [], dest: \"/f\", heredocs: [Heredoc { name: \"EOF\", content: \"$X\\n\", expand: false, chomp: false }], chown: None, chmod: None, link: false, exclude: [] }, from: None, parents: false })";
        add_checksum: "ADD --checksum=$SUM http://e/x /x", [("SUM", "sha256:short")] => "ERR invalid checksum \"sha256:short\": expected sha256:<64 hex digits> (or sha384/sha512, or a git commit id)";
        bad_word: "WORKDIR ${X", [] => "ERR failed to process \"${X\": syntax error: missing '}'";
    }

    #[test]
    fn run_mounts_reparsed_after_expansion() {
        let k = expand_first(
            "RUN --mount=type=cache,target=$DIR,uid=$UID make",
            &[("DIR", "/c"), ("UID", "1000")],
        )
        .unwrap();
        let InstructionKind::Run(r) = k else { panic!() };
        assert_eq!(
            (
                r.mounts[0].target.as_deref(),
                r.mounts[0].uid,
                r.mounts[0].id.as_deref()
            ),
            (Some("/c"), Some(1000), Some("/c"))
        );
        let err = expand_first(
            "RUN --mount=type=cache,target=/c,uid=$UID make",
            &[("UID", "me")],
        )
        .unwrap_err();
        assert_eq!(err, "invalid --mount: invalid uid \"me\": must be a number");
    }
}
