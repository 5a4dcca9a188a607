//! forge's Dockerfile front end: text → typed instructions with source spans.
//!
//! Parsing happens in the same layers as in BuildKit's Dockerfile frontend, and each layer is
//! usable on its own:
//!
//! 1. [`ast::parse`] reads the text into a node tree ([`ast::Ast`]): parser directives
//!    (`# syntax=`, `# escape=`, `# check=`), comments, line continuations, heredocs, and the
//!    arguments of each instruction split the way BuildKit splits them. [`ast::Node::dump`]
//!    prints BuildKit's golden-file notation, which is how this layer is tested against
//!    BuildKit's own test files.
//! 2. [`parse_dockerfile`] converts the nodes into [`Stage`]s of typed [`Instruction`]s and
//!    rejects what BuildKit rejects (unknown instructions and flags, bad flag values, missing
//!    arguments, duplicate stage names, …) with a [`ParseError`] that points at a line and
//!    column and often carries a "did you mean …?" hint.
//! 3. [`InstructionKind::expand`] applies the per-instruction `$VAR` expansion rules with a
//!    [`shell::Lexer`], once the caller knows the environment a step sees ([`resolve`] helps
//!    with ARG/ENV scoping and stage resolution).
//! 4. [`lint()`] reports the parse error, if any, plus warnings about valid but questionable
//!    input.
//!
//! ```
//! use forge_parser::{parse_dockerfile, lint, shell::Lexer, InstructionKind};
//!
//! let source = "FROM alpine:3.20 AS build\nWORKDIR /src/$APP\nRUN --mount=type=cache,target=/root/.cache make\n";
//! let dockerfile = parse_dockerfile(source).unwrap();
//! let stage = &dockerfile.stages[0];
//! assert_eq!(stage.name.as_deref(), Some("build"));
//! assert_eq!(stage.instructions[1].span.line, 3);
//!
//! let env = vec![("APP".to_string(), "web".to_string())];
//! let workdir = stage.instructions[0].kind.expand(&Lexer::new('\\'), &env).unwrap();
//! assert_eq!(workdir, InstructionKind::Workdir("/src/web".into()));
//!
//! let err = parse_dockerfile("FROM alpine\nCOPY --form=build /a /b\n").unwrap_err();
//! assert_eq!(err.to_string(), "line 2:6: unknown flag: --form (did you mean --from?)");
//! assert!(lint("FROM alpine\n").iter().any(|d| d.rule == Some("UnpinnedBaseImage")));
//! ```
//!
//! ## Why the lexer is written by hand
//!
//! The Dockerfile grammar is line-oriented and stateful rather than context-free: the escape
//! character can change at the top of the file, whether a line continues depends on that
//! character and on what follows it, comment and blank lines vanish only inside a continuation,
//! and heredoc bodies are raw lines whose end is decided by words found earlier on the
//! instruction line. Matching BuildKit byte for byte means copying those rules one by one, which
//! is clearest as a small loop over physical lines. The sub-grammars (flag words, JSON arrays,
//! `key=value` words, heredoc words) are equally small and each has a BuildKit quirk to keep
//! (flags drop quotes but `key=value` words keep them; JSON falls back to shell form unless it is
//! a valid array with a non-string element), so they are hand-written too: a combinator library
//! would add a dependency without removing any of that special-casing, and hand-written code
//! makes the "never panic, always a typed error" property easy to audit (it is also fuzzed, see
//! `fuzz/` at the repository root).

pub mod ast;
pub mod convert;
pub mod diagnostic;
pub mod dockerignore;
mod expand;
pub mod instructions;
pub mod lint;
pub mod resolve;
pub mod shell;
pub mod span;

pub use ast::strip_leading_tabs;
pub use convert::parse_dockerfile;
pub use lint::lint;
pub use diagnostic::{Diagnostic, ParseError, Severity};
pub use instructions::*;
pub use span::Span;
pub use shell::ExpandError;
