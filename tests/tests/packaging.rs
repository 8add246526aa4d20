//! What an installation ships besides the binaries: man pages generated from
//! the CLI definitions and shell completions.

use cairn_tests::*;
use std::process::Command;

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin(program)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn man_pages_and_completions_are_generated() {
    let dir = temp_dir("cairn-man-");
    run("cairn", &["man", dir.path().to_str().unwrap()]);
    for page in [
        "cairn.1",
        "cairn-volume.1",
        "cairn-volume-create.1",
        "cairn-volume-set.1",
        "cairn-bench.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
    run("cairnd", &["--man", dir.path().to_str().unwrap()]);
    let cairnd = std::fs::read_to_string(dir.path().join("cairnd.8")).unwrap();
    assert!(
        cairnd.contains("--listen") || cairnd.contains("listen"),
        "cairnd.8 lacks its options"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = run("cairn", &["completions", shell]);
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("volume") && script.contains("create"),
            "{shell} completion lacks subcommands"
        );
    }
    let bad = Command::new(bin("cairn"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
