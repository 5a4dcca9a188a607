//! Embedding forge: build an image from a Dockerfile held in a string, watch the progress
//! events, and write the result as an OCI layout tar.
//!
//!     cargo run -p forge --example embed
//!
//! It uses `FROM scratch`, so it needs no base image and no network.

use forge::{Build, Event, Output};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Required in every program that builds: RUN steps re-execute this binary as the sandbox.
    forge::init();

    let work = tempfile::tempdir()?;
    let context = work.path().join("context");
    std::fs::create_dir(&context)?;
    std::fs::write(context.join("message.txt"), "built by an embedded forge\n")?;

    let dockerfile = "\
FROM scratch
COPY message.txt /message.txt
LABEL example=embed
CMD [\"/message.txt\"]
";
    let out = work.path().join("image.tar");
    let (build, events) = Build::new(&context)
        .dockerfile_text(dockerfile)
        .root(work.path().join("store"))
        .tag("embed-example:latest")
        .output(Output::Oci { dest: out.clone(), tar: true })
        .events();
    let printer = std::thread::spawn(move || {
        for e in events {
            match e {
                Event::StepStarted { id, name } => println!("#{id} {name}"),
                Event::StepCached { id } => println!("#{id} CACHED"),
                Event::StepDone { id, duration, .. } => println!("#{id} done in {duration:?}"),
                _ => {}
            }
        }
    });
    let result = build.run()?;
    printer.join().ok();
    println!("image {} (id {})", result.manifest_digest, result.config_digest);
    println!("OCI layout written to {} ({} bytes)", out.display(), std::fs::metadata(&out)?.len());
    Ok(())
}
