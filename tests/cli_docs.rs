//! `regent generate-docs DIR`, the packaging step that writes the man page
//! and the shell completions from the clap definitions: every command is
//! documented, and the step itself is offered nowhere. No root.

use std::process::Command;

#[test]
fn generated_man_page_and_completions_cover_every_command() {
    let dir = std::env::temp_dir().join(format!("regent-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_regent"))
        .arg("generate-docs")
        .arg(&dir)
        .output()
        .expect("run regent");
    assert!(out.status.success(), "{out:?}");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
    };
    let man = read("regent.1");
    assert!(man.contains(".TH regent 1"), "{man}");
    for command in [
        "run",
        "init",
        "check",
        "status",
        "step-down",
        "metrics",
        "reload",
        "demo",
        "announce",
    ] {
        assert!(
            man.contains(&format!(".SH \"REGENT {}\"", command.to_uppercase())),
            "no section for {command}"
        );
    }
    assert!(
        !man.contains("(1)"),
        "the page points at pages that do not exist: {man}"
    );
    for file in ["regent.bash", "_regent", "regent.fish"] {
        let text = read(file);
        assert!(text.contains("step-down"), "{file}");
        assert!(
            !text.contains("generate-docs"),
            "{file} offers the packaging step"
        );
    }
    let help = Command::new(env!("CARGO_BIN_EXE_regent"))
        .arg("--help")
        .output()
        .expect("run regent");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate"));
    let _ = std::fs::remove_dir_all(&dir);
}
