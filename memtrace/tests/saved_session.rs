//! A saved session written by an earlier build (`tests/fixtures/saved-v1/session.json`, from a
//! real `--kind all --class all --interval 2s` session with a TCP receive-queue hold, trimmed to
//! 58 stacks) must re-render byte for byte as it did then: the text at several `--top`, the
//! JSON itself, folded stacks, the SVG flame graph, the pprof profile, and a `--class network`
//! narrowing. The expected files were written by that build's `memtrace report`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saved-v1")
}

fn report(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_memtrace"))
        .arg("report")
        .arg(fixtures().join("session.json"))
        .args(args)
        .output()
        .expect("running memtrace report");
    assert!(
        out.status.success(),
        "memtrace report {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 text")
}

fn expect_same(got: &[u8], name: &str) {
    let want = std::fs::read(fixtures().join(name)).expect("expected file");
    if got != want.as_slice() {
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let show = |b: &[u8]| {
            String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())]).into_owned()
        };
        panic!(
            "{name} differs at byte {at} (got {} bytes, expected {}):\n--- got ---\n{}\n--- expected ---\n{}",
            got.len(),
            want.len(),
            show(got),
            show(&want)
        );
    }
}

#[test]
fn text_renders_as_before() {
    expect_same(report(&["--top", "0"]).as_bytes(), "text-top0.txt");
    expect_same(report(&["--top", "5"]).as_bytes(), "text-top5.txt");
}

#[test]
fn files_render_as_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let text = report(&[
        "--json",
        &p("session.json"),
        "--folded",
        &p("folded.txt"),
        "--svg",
        &p("flame.svg"),
        "--pprof",
        &p("profile.pb.gz"),
    ]);
    expect_same(text.as_bytes(), "text-default.txt");
    let read = |n: &str| std::fs::read(dir.path().join(n)).expect("written file");
    expect_same(&read("session.json"), "session.json");
    expect_same(&read("folded.txt"), "folded.txt");
    expect_same(&read("flame.svg"), "flame.svg");
    expect_same(&read("profile.pb.gz"), "profile.pb.gz");
}

#[test]
fn class_narrowing_renders_as_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let text = report(&[
        "--class",
        "network",
        "--top",
        "3",
        "--json",
        &p("network.json"),
        "--folded",
        &p("network.folded"),
    ]);
    expect_same(text.as_bytes(), "network.txt");
    expect_same(
        &std::fs::read(dir.path().join("network.json")).expect("json"),
        "network.json",
    );
    expect_same(
        &std::fs::read(dir.path().join("network.folded")).expect("folded"),
        "network.folded",
    );
}
