//! Parse throughput: 1,000 generated Dockerfiles of about 50 lines each.
//!
//! `cargo bench -p forge-parser --bench parse`

use std::hint::black_box;

use divan::Bencher;

fn main() {
    divan::main();
}

/// A tiny deterministic generator (xorshift), so every run parses the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// One Dockerfile of roughly 50 lines mixing every instruction kind, continuations, comments,
/// heredocs, JSON and shell forms, and flags.
fn generate(seed: u64) -> String {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out =
        String::from("# syntax=docker/dockerfile:1\nARG VERSION=1.0\nFROM alpine:3.20 AS base\n");
    let bases = [
        "alpine:3.20",
        "debian:bookworm-slim",
        "golang:1.22 AS build",
        "node:20 AS deps",
        "scratch",
    ];
    let mut stage = 1;
    while out.lines().count() < 48 {
        match r.next() % 14 {
            0 if stage < 3 => {
                stage += 1;
                out.push_str(&format!("FROM --platform=$BUILDPLATFORM {}\n", r.pick(&bases).replace("AS ", &format!("AS s{stage}-"))));
            }
            1 => out.push_str("RUN apt-get update && \\\n    apt-get install -y --no-install-recommends \\\n      curl ca-certificates \\\n    && rm -rf /var/lib/apt/lists/*\n"),
            2 => out.push_str("RUN --mount=type=cache,target=/root/.cache,sharing=locked --network=none go build -o /out/app ./cmd/app\n"),
            3 => out.push_str("COPY --chown=1000:1000 --chmod=0644 --link src/ /app/src/\n"),
            4 => out.push_str("COPY <<EOF /etc/app.conf\nlisten = 8080\nlog = \"info\"\nEOF\n"),
            5 => out.push_str("ENV PATH=/usr/local/bin:$PATH LANG=C.UTF-8 APP_HOME=\"/srv/app\"\n"),
            6 => out.push_str("LABEL org.opencontainers.image.title=\"app\" org.opencontainers.image.version=$VERSION\n"),
            7 => out.push_str("# a comment between instructions\nWORKDIR /srv/app\n"),
            8 => out.push_str("HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD [\"curl\", \"-f\", \"http://localhost:8080/\"]\n"),
            9 => out.push_str("EXPOSE 8080 9090/udp\n"),
            10 => out.push_str("ADD --checksum=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef https://example.com/a.tgz /tmp/\n"),
            11 => out.push_str("RUN <<-SCRIPT\n\tset -eux\n\techo building\n\tSCRIPT\n"),
            12 => out.push_str("USER 1000:1000\nVOLUME [\"/data\"]\n"),
            _ => out.push_str("ENTRYPOINT [\"/usr/local/bin/app\"]\nCMD [\"--serve\"]\n"),
        }
    }
    out
}

fn corpus() -> Vec<String> {
    (0..1000).map(generate).collect()
}

#[divan::bench(sample_count = 20)]
fn parse_dockerfile_1000(bencher: Bencher) {
    let files = corpus();
    for f in &files {
        if let Err(e) = forge_parser::parse_dockerfile(f) {
            panic!("generated file must parse: {e}\n{f}");
        }
    }
    bencher
        .counter(divan::counter::BytesCount::new(
            files.iter().map(String::len).sum::<usize>(),
        ))
        .bench(|| {
            for f in &files {
                black_box(forge_parser::parse_dockerfile(black_box(f)).ok());
            }
        });
}

#[divan::bench(sample_count = 20)]
fn ast_only_1000(bencher: Bencher) {
    let files = corpus();
    bencher.bench(|| {
        for f in &files {
            black_box(forge_parser::ast::parse(black_box(f)).ok());
        }
    });
}

#[divan::bench(sample_count = 20)]
fn lint_1000(bencher: Bencher) {
    let files = corpus();
    bencher.bench(|| {
        for f in &files {
            black_box(forge_parser::lint(black_box(f)));
        }
    });
}
