//! forge's Dockerfile front end: text → typed instructions with source spans.

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
