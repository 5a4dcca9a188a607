//! Turning errors into messages and exit codes: 1 for a failed build or command, 2 for usage
//! errors. Dockerfile problems are shown with the source line and a caret.

use std::process::ExitCode;

use forge::Error;
use forge_parser::Diagnostic;
use forge_solver::SolveError;

/// A command's failure, ready to print.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { message: format!("error: {}", message.into()), code: 2 }
    }

    pub fn failed(message: impl Into<String>) -> Failure {
        Failure { message: format!("error: {}", message.into()), code: 1 }
    }

    pub fn report(self) -> ExitCode {
        eprintln!("{}", self.message.trim_end());
        ExitCode::from(self.code)
    }

    /// Renders a library error; `dockerfile` is (display name, text) when known.
    pub fn from_error(e: Error, dockerfile: Option<(&str, &str)>) -> Failure {
        let code = match &e {
            Error::Usage(_) => 2,
            // `--target` names a stage the Dockerfile lacks: the command line is wrong.
            Error::Solve(SolveError::UnknownTarget { .. }) => 2,
            _ => 1,
        };
        let message = match (&e, dockerfile) {
            (Error::Solve(se), Some((file, text))) => render_solve(se, file, text),
            _ => format!("error: {e}"),
        };
        Failure { message, code }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::from_error(e, None)
    }
}

impl From<forge_cache::StoreError> for Failure {
    fn from(e: forge_cache::StoreError) -> Failure {
        Failure::failed(e.to_string())
    }
}

impl From<forge_registry::RegistryError> for Failure {
    fn from(e: forge_registry::RegistryError) -> Failure {
        Failure::failed(e.to_string())
    }
}

fn render_solve(e: &SolveError, file: &str, text: &str) -> String {
    match e {
        SolveError::Parse(pe) => pe.render(file, text),
        SolveError::Step { location, message, help } => {
            let mut d = Diagnostic::error(message.clone(), location.span);
            d.help = help.clone();
            d.render(file, text)
        }
        SolveError::RunFailed { location, status, last_output } => {
            let d = Diagnostic::error(format!("{} {status}", location.instruction), location.span);
            let mut out = d.render(file, text);
            if !last_output.is_empty() {
                out.push_str("last output:\n");
                for l in last_output {
                    out.push_str("  ");
                    out.push_str(l);
                    out.push('\n');
                }
            }
            out
        }
        other => format!("error: {other}"),
    }
}
