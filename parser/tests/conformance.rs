//! Runs forge's parser against the conformance corpora in `../shared/conformance/`.
//! `cargo test -p forge-parser --test conformance -- --nocapture` prints one line per corpus.

#[path = "conformance/common.rs"]
mod common;
#[path = "conformance/parser_corpus.rs"]
mod parser_corpus;
#[path = "conformance/instructions.rs"]
mod instructions;
#[path = "conformance/shell.rs"]
mod shell;
#[path = "conformance/dockerignore.rs"]
mod dockerignore;
#[path = "conformance/dockerfile2llb.rs"]
mod dockerfile2llb;
