//! `regent demo`, both stories, end to end: real daemons on loopback, as
//! the README's quick start runs them, judged by the lines they print. No
//! root.
//!
//! The witness story must show the leader's crash taken over by the other
//! host (which needs the witness's vote), then the same leader and epoch
//! after the witness's own crash; the witness, which has the highest
//! priority, must never lead.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// The stories time failovers against a 300 ms dead_after: one at a time,
/// so that they do not share the CPUs with each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A "node N is LEADER, epoch E  TEXT" line of the story.
#[derive(Debug)]
struct Leads {
    node: u32,
    epoch: u64,
    text: String,
}

/// Runs `regent demo ARGS`; its standard output, once it exited 0.
fn demo(args: &[&str]) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_regent"))
        .arg("demo")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run regent demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "regent demo {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Everything it wrote is gone.
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("working directory: "))
        .unwrap_or_else(|| panic!("no working directory in\n{stdout}"));
    assert!(!Path::new(dir).exists(), "{dir} was left behind");
    stdout
}

/// The leadership lines, in order.
fn leaderships(stdout: &str) -> Vec<Leads> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.split_once("  node ")?.1;
            let (node, rest) = rest.split_once(" is LEADER, epoch ")?;
            let (epoch, text) = rest.split_once("  ").unwrap_or((rest, ""));
            Some(Leads {
                node: node.parse().ok()?,
                epoch: epoch.parse().ok()?,
                text: text.to_owned(),
            })
        })
        .collect()
}

/// The figure of a summary row.
fn row<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(what))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no summary row {what:?} in\n{stdout}"))
}

#[test]
fn witness_story_takes_over_with_its_vote_and_rides_out_its_crash() {
    let stdout = demo(&["--witness"]);
    let leads = leaderships(&stdout);
    let [first, takeover, kept] = leads.as_slice() else {
        panic!("expected 3 leadership lines, got {leads:?}\n{stdout}");
    };
    // The witness, node 3, never leads, though its priority is the highest.
    assert!(
        leads.iter().all(|l| l.node != 3),
        "the witness led: {leads:?}\n{stdout}"
    );
    // The leader's crash: the other host takes over, in a newer epoch.
    assert!(
        stdout.contains(&format!("kill -9 node {} (crash", first.node)),
        "{stdout}"
    );
    assert!(
        takeover.node != first.node
            && takeover.epoch > first.epoch
            && takeover.text.starts_with("took over in ")
            && takeover.text.contains("with the witness's vote"),
        "no takeover by the other host: {takeover:?}\n{stdout}"
    );
    // The crashed host comes back as a follower of the new leader.
    assert!(
        stdout.contains(&format!(
            "node {} follows node {} in epoch {}",
            first.node, takeover.node, takeover.epoch
        )),
        "{stdout}"
    );
    // The witness's crash: same leader, same epoch, and the leader says
    // it leads, which it does only while its lease holds.
    assert!(stdout.contains("kill -9 node 3, the witness"), "{stdout}");
    assert!(
        kept.node == takeover.node
            && kept.epoch == takeover.epoch
            && kept.text.starts_with("kept for ")
            && kept.text.contains(&format!(
                "node {} says \"leader epoch {}\"",
                takeover.node, takeover.epoch
            )),
        "the leadership changed after the witness's crash: {kept:?}\n{stdout}"
    );
    assert_eq!(
        row(&stdout, "fencing epochs"),
        format!(
            "[{}, {}] (every leadership has its own, increasing)",
            first.epoch, takeover.epoch
        )
    );
    assert!(
        row(&stdout, "leaders at once").ends_with("the witness never led"),
        "{stdout}"
    );
}

/// The README's quick start: three hosts, a crash, a preemption and a
/// graceful handover, each with a leader of its own epoch.
#[test]
fn default_story_fails_over_three_times() {
    let stdout = demo(&[]);
    let leads = leaderships(&stdout);
    let nodes: Vec<u32> = leads.iter().map(|l| l.node).collect();
    assert_eq!(nodes, [1, 2, 1, 2], "{leads:?}\n{stdout}");
    let epochs: Vec<u64> = leads.iter().map(|l| l.epoch).collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    for what in [
        "first election",
        "crash failover (SIGKILL)",
        "preemption handover",
        "graceful handover (SIGTERM)",
    ] {
        row(&stdout, what);
    }
    assert_eq!(
        row(&stdout, "fencing epochs"),
        format!("{epochs:?} (every leadership has its own, increasing)")
    );
}
