//! Parsing: the deep scenario's 60-instruction Dockerfile, and a generated 3,000-instruction one.

use divan::counter::BytesCount;
use divan::Bencher;

fn main() {
    divan::main();
}

fn deep() -> String {
    let mut s = String::from("ARG BASE=busybox:local\nFROM $BASE\n");
    for g in 1..=12 {
        s += &format!("ENV STEP_GROUP_{g:02}=g{g:02} PATH_G{g:02}=/opt/app/g{g:02}\n");
        s += &format!("WORKDIR /opt/app/g{g:02}\n");
        s += &format!("RUN echo \"group {g:02} $STEP_GROUP_{g:02}\" > /opt/app/g{g:02}/run.txt && ls /opt/app > /opt/app/g{g:02}/ls.txt\n");
        s += &format!("LABEL org.example.group{g:02}=\"g{g:02}\"\n");
        s += &format!("COPY files/f{g:02}.txt ./f{g:02}.txt\n");
    }
    s
}

fn large() -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\n");
    for stage in 0..50 {
        s += &format!("FROM $BASE AS s{stage}\n");
        for i in 0..20 {
            s += &format!("RUN --mount=type=cache,target=/root/.cache set -e; \\\n    echo {stage} {i} > /f{i} && \\\n    cat /f{i}\n");
            s += &format!("COPY --chown=1000:1000 --chmod=0644 src/{i}/*.py /app/{i}/\n");
            s += &format!("ENV K{i}=\"v {stage} ${{K{i}:-none}}\"\n");
        }
        s += "RUN <<EOF\nset -e\necho heredoc\nEOF\n";
    }
    s
}

#[divan::bench]
fn parse_deep(bencher: Bencher) {
    let text = deep();
    bencher
        .counter(BytesCount::new(text.len()))
        .bench(|| forge_parser::parse_dockerfile(divan::black_box(&text)).expect("parse"));
}

#[divan::bench(sample_count = 30)]
fn parse_3000_instructions(bencher: Bencher) {
    let text = large();
    bencher
        .counter(BytesCount::new(text.len()))
        .bench(|| forge_parser::parse_dockerfile(divan::black_box(&text)).expect("parse"));
}
