//! # forge
//!
//! forge turns a Dockerfile into an OCI image without a daemon. This crate is the library
//! facade; the `forge` binary is a thin command line over it.
//!
//! ```
//! use forge::{Build, Event, Output};
//!
//! // A process that builds images runs RUN steps in a re-executed helper of itself:
//! // call this first in main().
//! forge::init();
//!
//! # let work = tempfile::tempdir()?;
//! # let context = work.path().join("app");
//! # std::fs::create_dir(&context)?;
//! # std::fs::write(context.join("hello.txt"), "hi\n")?;
//! # let store = work.path().join("store");
//! # let oci_tar = work.path().join("app.tar");
//! let (build, events) = Build::new(&context)
//!     .dockerfile_text("FROM scratch\nARG VERSION\nCOPY hello.txt /srv/\nLABEL version=$VERSION\n")
//!     .root(&store)                       // the store directory (default: forge::default_root())
//!     .tag("app:latest")
//!     .build_arg("VERSION", "1.2.3")
//!     .output(Output::Oci { dest: oci_tar.clone(), tar: true })
//!     .events();
//! let result = build.run()?;
//! let steps: Vec<Event> = events.try_iter().collect();
//! assert!(steps.iter().any(|e| matches!(e, Event::StepStarted { name, .. } if name.contains("COPY hello.txt"))));
//! assert_eq!(result.config.config.labels.unwrap()["version"], "1.2.3");
//! assert_eq!(result.tags, ["docker.io/library/app:latest"]);
//! assert!(oci_tar.exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Progress arrives as [`Event`]s, through [`Build::on_event`] or a channel from
//! [`Build::events`]. The library never prints, never exits the process and keeps no global
//! state: everything lives in the [`Build`] value and the store directory it points at.

mod builder;
mod error;
mod fetch;
pub mod output;
pub mod registry_images;
mod remote_cache;

pub use builder::{read_secret_spec, Build, BuildResult, CacheSpec};
pub use error::Error;
pub use forge_solver::{Event, LogStream, NamedContext};
pub use output::Output;

/// Must be called first in `main()` of any program that runs builds with RUN steps: when the
/// process was re-executed as forge's sandbox helper, this runs the helper and never returns.
pub fn init() {
    forge_sandbox::maybe_run_helper();
}

/// The default store root: `$FORGE_ROOT`, else `/var/lib/forge` for root, else
/// `~/.local/share/forge`.
pub fn default_root() -> std::path::PathBuf {
    forge_cache::Store::default_root()
}
