//! Brick changes and rebalance: `volume add-brick`, `remove-brick`,
//! `replace-brick` and `rebalance` as gluster spells them, and their
//! reports in gluster's layouts (the `rebalance status` table, the `Task
//! Status` block of `volume status`).

use anyhow::{bail, Context};
use cairn_common::addr::BrickAddr;
use cairn_common::proto::{
    AdminRequest, NodeRebalance, RebalanceAction, RebalanceKind, RebalanceStatus, RebalanceTask, RemoveBrickAction,
    TaskState, VolumeSpec,
};
use std::fmt::Write;

/// gluster's usage line for `volume rebalance` (plus `--watch`).
const REBALANCE_USAGE: &str =
    "Usage: volume rebalance <VOLNAME> {{fix-layout start} | {start [force]|stop|status [--watch]}}";
const REMOVE_BRICK_USAGE: &str =
    "Usage: volume remove-brick <VOLNAME> <BRICK> ... <start|stop|status [--watch]|commit|force>";
const REPLACE_BRICK_USAGE: &str = "Usage: volume replace-brick <VOLNAME> <SOURCE-BRICK> <NEW-BRICK> {commit force}";
/// gluster stops estimating beyond this (`REBAL_ESTIMATE_SEC_UPPER_LIMIT`).
const ESTIMATE_LIMIT_S: u64 = 60 * 24 * 3600;

/// `--watch`, wherever it is among `words`, taken out.
fn take_watch(words: &mut Vec<String>) -> bool {
    let before = words.len();
    words.retain(|w| w != "--watch");
    words.len() != before
}

fn check_bricks(bricks: &[String]) -> anyhow::Result<()> {
    for b in bricks {
        BrickAddr::parse(b)?;
    }
    Ok(())
}

/// `volume add-brick VOL [replica N] BRICK... [force]`.
pub fn parse_add_brick(name: String, mut words: Vec<String>) -> anyhow::Result<AdminRequest> {
    cairn_common::names::check_volume_name(&name)?;
    let force = words.last().map(String::as_str) == Some("force");
    if force {
        words.pop();
    }
    let mut replica = None;
    if words.first().map(String::as_str) == Some("replica") {
        let n: u32 = words
            .get(1)
            .and_then(|w| w.parse().ok())
            .filter(|n| (1..=8).contains(n))
            .context("replica needs a count from 1 to 8: volume add-brick VOL [replica N] NODE:/path ... [force]")?;
        if words.get(2).map(String::as_str) == Some("arbiter") {
            bail!("add-brick cannot add arbiter bricks: converting a volume to an arbiter volume is not supported");
        }
        replica = Some(n);
        words.drain(..2);
    }
    if words.is_empty() {
        bail!("add-brick needs at least one brick: volume add-brick VOL [replica N] NODE:/path ... [force]");
    }
    check_bricks(&words)?;
    Ok(AdminRequest::VolumeAddBrick {
        name,
        bricks: words,
        replica,
        force,
    })
}

/// `volume remove-brick VOL BRICK... start|status [--watch]|stop|commit|force`;
/// true with `--watch`.
pub fn parse_remove_brick(name: String, mut words: Vec<String>) -> anyhow::Result<(AdminRequest, bool)> {
    cairn_common::names::check_volume_name(&name)?;
    let watch = take_watch(&mut words);
    let Some(last) = words.pop() else {
        bail!("{REMOVE_BRICK_USAGE}");
    };
    let action = match last.as_str() {
        "start" => RemoveBrickAction::Start,
        "status" => RemoveBrickAction::Status,
        "stop" => RemoveBrickAction::Stop,
        "commit" => RemoveBrickAction::Commit,
        "force" => RemoveBrickAction::Force,
        _ => {
            bail!("remove-brick needs an action at the end: start, status, stop, commit or force. {REMOVE_BRICK_USAGE}")
        }
    };
    // `commit force` is how gluster prints the forced removal.
    if action == RemoveBrickAction::Force && words.last().map(String::as_str) == Some("commit") {
        words.pop();
    }
    if watch && action != RemoveBrickAction::Status {
        bail!("--watch goes with status only: volume remove-brick VOL BRICK... status --watch");
    }
    if words.first().map(String::as_str) == Some("replica") {
        bail!("remove-brick cannot lower the replica count: remove whole replica sets instead");
    }
    if words.is_empty() {
        bail!("remove-brick needs at least one brick. {REMOVE_BRICK_USAGE}");
    }
    check_bricks(&words)?;
    Ok((
        AdminRequest::VolumeRemoveBrick {
            name,
            bricks: words,
            action,
        },
        watch,
    ))
}

/// `volume replace-brick VOL OLD NEW commit force`, the only form gluster
/// still accepts.
pub fn parse_replace_brick(name: String, words: &[String]) -> anyhow::Result<AdminRequest> {
    cairn_common::names::check_volume_name(&name)?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        [old, new, "commit", "force"] => {
            BrickAddr::parse(old)?;
            BrickAddr::parse(new)?;
            Ok(AdminRequest::VolumeReplaceBrick {
                name,
                old: old.to_string(),
                new: new.to_string(),
            })
        }
        [_, _, "start" | "status" | "abort" | "pause" | "commit", ..] => bail!(
            "replace-brick {} is not supported: only 'commit force' is (self-heal fills the new brick). {REPLACE_BRICK_USAGE}",
            words[2..].join(" ")
        ),
        _ => bail!("{REPLACE_BRICK_USAGE}"),
    }
}

/// `volume rebalance VOL fix-layout start | start [force] | stop | status
/// [--watch]`; true with `--watch`.
pub fn parse_rebalance(name: String, mut words: Vec<String>) -> anyhow::Result<(AdminRequest, bool)> {
    cairn_common::names::check_volume_name(&name)?;
    let watch = take_watch(&mut words);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let action = match words.as_slice() {
        ["fix-layout", "start"] => RebalanceAction::FixLayoutStart,
        ["start"] => RebalanceAction::Start { force: false },
        ["start", "force"] => RebalanceAction::Start { force: true },
        ["stop"] => RebalanceAction::Stop,
        ["status"] => RebalanceAction::Status,
        _ => bail!("{REBALANCE_USAGE}"),
    };
    if watch && action != RebalanceAction::Status {
        bail!("--watch goes with status only: volume rebalance VOL status --watch");
    }
    Ok((AdminRequest::VolumeRebalance { name, action }, watch))
}

/// gluster's `gf_uint64_2human_readable`: `8.8MB`, `9Bytes`.
pub fn human_size(n: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("PB", 50), ("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)];
    for (unit, shift) in UNITS {
        if n >= 1u64 << shift {
            return format!("{:.1}{unit}", n as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{n}Bytes")
}

/// `H:MM:SS` with gluster's `%8d:%02d:%02d`.
fn hms(secs: u64) -> String {
    format!("{:8}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A node as the table shows it: its host.
fn host(node: &str) -> String {
    cairn_common::addr::split_host_port(node).map_or_else(|_| node.to_string(), |(h, _)| h)
}

fn state_word(row: &NodeRebalance, fix_layout: bool) -> &'static str {
    if !row.reachable && row.state == TaskState::NotStarted {
        return "not reachable";
    }
    match (row.state, fix_layout) {
        (TaskState::NotStarted, _) => "not started",
        (TaskState::InProgress, false) => "in progress",
        (TaskState::Stopped, false) => "stopped",
        (TaskState::Completed, false) => "completed",
        (TaskState::Failed, false) => "failed",
        (TaskState::InProgress, true) => "fix-layout in progress",
        (TaskState::Stopped, true) => "fix-layout stopped",
        (TaskState::Completed, true) => "fix-layout completed",
        (TaskState::Failed, true) => "fix-layout failed",
    }
}

/// Is some node's worker still running?
pub fn in_progress(st: &RebalanceStatus) -> bool {
    st.nodes.iter().any(|n| n.state == TaskState::InProgress)
}

/// The `rebalance status` / `remove-brick status` report (also printed by
/// `stop`), in gluster's layout.
pub fn status_text(req: &AdminRequest, st: &RebalanceStatus) -> String {
    let kind = st.task.as_ref().map(|t| &t.kind);
    let fix_layout = matches!(kind, Some(RebalanceKind::FixLayout));
    let remove_brick = matches!(req, AdminRequest::VolumeRemoveBrick { .. })
        || matches!(kind, Some(RebalanceKind::RemoveBrick { .. }));
    let mut s = String::new();
    if fix_layout {
        let _ = writeln!(s, "{:>35} {:>41} {:>27}", "Node", "status", "run time in h:m:s");
        let _ = writeln!(s, "{:>35} {:>41} {:>27}", "---------", "-----------", "------------");
        for n in &st.nodes {
            let _ = writeln!(
                s,
                "{:>35} {:>50} {}",
                host(&n.node),
                state_word(n, true),
                hms(n.run_time_s)
            );
        }
    } else {
        let _ = writeln!(
            s,
            "{:>40} {:>16} {:>13} {:>13} {:>13} {:>13} {:>20} {:>18}",
            "Node", "Rebalanced-files", "size", "scanned", "failures", "skipped", "status", "run time in h:m:s"
        );
        let _ = writeln!(
            s,
            "{:>40} {:>16} {:>13} {:>13} {:>13} {:>13} {:>20} {:>18}",
            "---------",
            "-----------",
            "-----------",
            "-----------",
            "-----------",
            "-----------",
            "------------",
            "--------------"
        );
        for n in &st.nodes {
            // remove-brick counts a skipped file as a failure, as gluster:
            // it stays on a brick that is leaving.
            let (failures, skipped) = if remove_brick {
                (n.failures + n.skipped, 0)
            } else {
                (n.failures, n.skipped)
            };
            let _ = writeln!(
                s,
                "{:>40} {:>16} {:>13} {:>13} {:>13} {:>13} {:>20} {}",
                host(&n.node),
                n.files,
                human_size(n.bytes),
                n.scanned,
                failures,
                skipped,
                state_word(n, false),
                hms(n.run_time_s)
            );
        }
        if in_progress(st) {
            let estimate = st
                .nodes
                .iter()
                .filter(|n| n.state == TaskState::InProgress)
                .filter_map(|n| n.estimate_s)
                .max();
            match estimate {
                Some(e) if e > ESTIMATE_LIMIT_S => {
                    let _ = writeln!(
                        s,
                        "The estimated time for rebalance to complete is > 2 months. Please try again later."
                    );
                }
                Some(e) => {
                    let _ = writeln!(s, "Estimated time left for rebalance to complete : {}", hms(e));
                }
                None => {
                    let _ = writeln!(
                        s,
                        "The estimated time for rebalance to complete will be unavailable for the first 10 minutes."
                    );
                }
            }
        }
    }
    match req {
        AdminRequest::VolumeRebalance {
            name,
            action: RebalanceAction::Stop,
        } => {
            let _ = writeln!(
                s,
                "volume rebalance: {name}: success: rebalance process may be in the middle of a file migration.\n\
                 The process will be fully stopped once the migration of the file is complete.\n\
                 Please check rebalance process for completion before doing any further brick related tasks on the volume."
            );
        }
        AdminRequest::VolumeRebalance { name, .. } => {
            let _ = writeln!(s, "volume rebalance: {name}: success");
        }
        AdminRequest::VolumeRemoveBrick {
            action: RemoveBrickAction::Stop,
            ..
        } => {
            let _ = writeln!(
                s,
                "volume remove-brick stop: success\n\
                 'remove-brick' process may be in the middle of a file migration.\n\
                 The process will be fully stopped once the migration of the file is complete.\n\
                 Please check remove-brick process for completion before doing any further brick related tasks on the volume."
            );
        }
        _ => {}
    }
    s
}

/// A task's overall state for `volume status`: completed when every node
/// completed, failed if one failed, stopped if stopped, else in progress.
pub fn task_state(task: &RebalanceTask) -> &'static str {
    let finished: Vec<&NodeRebalance> = task.nodes.iter().filter_map(|n| task.finished.get(n)).collect();
    let all_finished = finished.len() == task.nodes.len();
    if all_finished && finished.iter().all(|r| r.state == TaskState::Completed) {
        "completed"
    } else if finished.iter().any(|r| r.state == TaskState::Failed) {
        "failed"
    } else if task.stopped || all_finished {
        "stopped"
    } else {
        "in progress"
    }
}

/// gluster's `Task Status of Volume` block of `volume status VOL`.
pub fn task_block(name: &str, spec: Option<&VolumeSpec>) -> String {
    const RULE: &str = "------------------------------------------------------------------------------";
    let mut s = format!(" \nTask Status of Volume {name}\n{RULE}\n");
    let Some(task) = spec.and_then(|v| v.task.as_ref()) else {
        s.push_str("There are no active volume tasks\n \n");
        return s;
    };
    let field = |s: &mut String, k: &str, v: &str| {
        let _ = writeln!(s, "{k:<20} : {v:<20}");
    };
    let what = match task.kind {
        RebalanceKind::RemoveBrick { .. } => "Remove brick",
        _ => "Rebalance",
    };
    field(&mut s, "Task", what);
    field(&mut s, "ID", &task.id.to_string());
    if let (RebalanceKind::RemoveBrick { bricks }, Some(v)) = (&task.kind, spec) {
        let _ = writeln!(s, "{:<20}", "Removed bricks:");
        for b in v.bricks.iter().filter(|b| bricks.contains(&b.id)) {
            let _ = writeln!(s, "{:<20}", b.label());
        }
    }
    field(&mut s, "Status", task_state(task));
    s.push_str(" \n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn row(node: &str, files: u64, bytes: u64, state: TaskState) -> NodeRebalance {
        NodeRebalance {
            node: node.into(),
            files,
            bytes,
            scanned: 150,
            failures: 0,
            skipped: 2,
            fixed_dirs: 3,
            state,
            run_time_s: 3661,
            estimate_s: None,
            reachable: true,
        }
    }

    fn task(kind: RebalanceKind) -> RebalanceTask {
        RebalanceTask {
            id: Uuid::nil(),
            kind,
            commit: 2,
            started: 0,
            stopped: false,
            nodes: vec!["10.0.0.1:24007".into(), "10.0.0.2:24007".into()],
            finished: BTreeMap::new(),
        }
    }

    #[test]
    fn add_brick_words() {
        let r = parse_add_brick("gv0".into(), w("replica 3 n1:/b n2:/b force")).unwrap();
        assert_eq!(
            r,
            AdminRequest::VolumeAddBrick {
                name: "gv0".into(),
                bricks: w("n1:/b n2:/b"),
                replica: Some(3),
                force: true,
            }
        );
        let r = parse_add_brick("gv0".into(), w("n1:/b")).unwrap();
        assert!(matches!(
            r,
            AdminRequest::VolumeAddBrick {
                replica: None,
                force: false,
                ..
            }
        ));
        assert!(parse_add_brick("gv0".into(), w("replica")).is_err());
        assert!(parse_add_brick("gv0".into(), w("replica 9 n1:/b")).is_err());
        assert!(parse_add_brick("gv0".into(), w("replica 3 arbiter 1 n1:/b")).is_err());
        assert!(parse_add_brick("gv0".into(), w("force")).is_err());
        assert!(parse_add_brick("gv0".into(), w("n1:relative")).is_err());
    }

    #[test]
    fn remove_brick_words() {
        let (r, watch) = parse_remove_brick("gv0".into(), w("n1:/b n2:/b status --watch")).unwrap();
        assert!(watch);
        assert_eq!(
            r,
            AdminRequest::VolumeRemoveBrick {
                name: "gv0".into(),
                bricks: w("n1:/b n2:/b"),
                action: RemoveBrickAction::Status,
            }
        );
        for (words, action) in [
            ("n1:/b start", RemoveBrickAction::Start),
            ("n1:/b stop", RemoveBrickAction::Stop),
            ("n1:/b commit", RemoveBrickAction::Commit),
            ("n1:/b force", RemoveBrickAction::Force),
            ("n1:/b commit force", RemoveBrickAction::Force),
        ] {
            let (r, _) = parse_remove_brick("gv0".into(), w(words)).unwrap();
            assert!(
                matches!(r, AdminRequest::VolumeRemoveBrick { action: a, ref bricks, .. } if a == action && bricks.len() == 1)
            );
        }
        assert!(parse_remove_brick("gv0".into(), w("n1:/b")).is_err());
        assert!(parse_remove_brick("gv0".into(), w("start")).is_err());
        assert!(parse_remove_brick("gv0".into(), w("n1:/b start --watch")).is_err());
        assert!(parse_remove_brick("gv0".into(), w("replica 1 n1:/b start")).is_err());
    }

    #[test]
    fn replace_brick_takes_only_commit_force() {
        let r = parse_replace_brick("gv0".into(), &w("n1:/a n2:/b commit force")).unwrap();
        assert_eq!(
            r,
            AdminRequest::VolumeReplaceBrick {
                name: "gv0".into(),
                old: "n1:/a".into(),
                new: "n2:/b".into(),
            }
        );
        for words in [
            "n1:/a n2:/b start",
            "n1:/a n2:/b status",
            "n1:/a n2:/b abort",
            "n1:/a n2:/b commit",
        ] {
            let e = parse_replace_brick("gv0".into(), &w(words)).unwrap_err().to_string();
            assert!(e.contains("only 'commit force'"), "{e}");
        }
        assert!(parse_replace_brick("gv0".into(), &w("n1:/a commit force")).is_err());
        assert!(parse_replace_brick("gv0".into(), &w("n1:/a n2:b commit force")).is_err());
    }

    #[test]
    fn rebalance_words() {
        let p = |s: &str| parse_rebalance("gv0".into(), w(s));
        let action = |s: &str| match p(s).unwrap().0 {
            AdminRequest::VolumeRebalance { action, .. } => action,
            other => panic!("{other:?}"),
        };
        assert_eq!(action("fix-layout start"), RebalanceAction::FixLayoutStart);
        assert_eq!(action("start"), RebalanceAction::Start { force: false });
        assert_eq!(action("start force"), RebalanceAction::Start { force: true });
        assert_eq!(action("stop"), RebalanceAction::Stop);
        assert_eq!(action("status"), RebalanceAction::Status);
        assert!(p("status --watch").unwrap().1);
        for bad in ["fix-layout start force", "", "start now", "stop --watch", "fix-layout"] {
            assert!(p(bad).unwrap_err().to_string().starts_with("Usage: volume rebalance") || bad.contains("--watch"));
        }
    }

    #[test]
    fn sizes_read_as_gluster_prints_them() {
        assert_eq!(human_size(0), "0Bytes");
        assert_eq!(human_size(9), "9Bytes");
        assert_eq!(human_size(2048), "2.0KB");
        assert_eq!(human_size(9_227_468), "8.8MB");
        assert_eq!(human_size(3 << 30), "3.0GB");
    }

    #[test]
    fn the_rebalance_table() {
        let req = AdminRequest::VolumeRebalance {
            name: "rdst".into(),
            action: RebalanceAction::Status,
        };
        let st = RebalanceStatus {
            volume: "rdst".into(),
            task: Some(task(RebalanceKind::Migrate { force: false })),
            nodes: vec![
                row("10.0.0.1:24007", 106, 9_227_468, TaskState::Completed),
                row("10.0.0.2:24007", 0, 0, TaskState::Completed),
            ],
        };
        let expected = "                                    Node Rebalanced-files          size       scanned      failures       skipped               status  run time in h:m:s
                               ---------      -----------   -----------   -----------   -----------   -----------         ------------     --------------
                                10.0.0.1              106         8.8MB           150             0             2            completed        1:01:01
                                10.0.0.2                0        0Bytes           150             0             2            completed        1:01:01
volume rebalance: rdst: success
";
        assert_eq!(status_text(&req, &st), expected);
    }

    #[test]
    fn estimates_while_in_progress() {
        let req = AdminRequest::VolumeRebalance {
            name: "v".into(),
            action: RebalanceAction::Status,
        };
        let mut st = RebalanceStatus {
            volume: "v".into(),
            task: Some(task(RebalanceKind::Migrate { force: false })),
            nodes: vec![row("10.0.0.1:24007", 1, 1, TaskState::InProgress)],
        };
        assert!(status_text(&req, &st).contains(
            "\nThe estimated time for rebalance to complete will be unavailable for the first 10 minutes.\n"
        ));
        st.nodes[0].estimate_s = Some(2 * 3600 + 5);
        st.nodes.push(row("10.0.0.2:24007", 1, 1, TaskState::InProgress));
        st.nodes[1].estimate_s = Some(60);
        let text = status_text(&req, &st);
        assert!(
            text.contains("\nEstimated time left for rebalance to complete :        2:00:05\n"),
            "{text}"
        );
        assert!(text.ends_with("volume rebalance: v: success\n"));
        st.nodes[0].estimate_s = Some(ESTIMATE_LIMIT_S + 1);
        assert!(status_text(&req, &st).contains("> 2 months"));
    }

    #[test]
    fn the_fix_layout_table() {
        let req = AdminRequest::VolumeRebalance {
            name: "rdst".into(),
            action: RebalanceAction::Status,
        };
        let mut unreachable = row("10.0.0.2:24007", 0, 0, TaskState::NotStarted);
        unreachable.reachable = false;
        let st = RebalanceStatus {
            volume: "rdst".into(),
            task: Some(task(RebalanceKind::FixLayout)),
            nodes: vec![row("10.0.0.1:24007", 0, 0, TaskState::Completed), unreachable],
        };
        let expected =
            "                               Node                                    status           run time in h:m:s
                          ---------                               -----------                ------------
                           10.0.0.1                               fix-layout completed        1:01:01
                           10.0.0.2                                      not reachable        1:01:01
volume rebalance: rdst: success
";
        assert_eq!(status_text(&req, &st), expected);
    }

    #[test]
    fn remove_brick_folds_skipped_into_failures() {
        let req = AdminRequest::VolumeRemoveBrick {
            name: "v".into(),
            bricks: vec![],
            action: RemoveBrickAction::Status,
        };
        let st = RebalanceStatus {
            volume: "v".into(),
            task: Some(task(RebalanceKind::RemoveBrick { bricks: vec![] })),
            nodes: vec![row("n1:7000", 71, 5_033_165, TaskState::Completed)],
        };
        let text = status_text(&req, &st);
        let line = text.lines().nth(2).unwrap();
        assert_eq!(
            line,
            "                                      n1               71         4.8MB           150             2             0            completed        1:01:01"
        );
        assert_eq!(text.lines().count(), 3, "no trailer for remove-brick status");
        let stop = AdminRequest::VolumeRemoveBrick {
            name: "v".into(),
            bricks: vec![],
            action: RemoveBrickAction::Stop,
        };
        assert!(status_text(&stop, &st).contains("\nvolume remove-brick stop: success\n"));
    }

    #[test]
    fn the_task_block_of_volume_status() {
        let brick = |n: &str, p: &str| cairn_common::proto::BrickSpec {
            id: Uuid::new_v4(),
            node: n.into(),
            path: p.into(),
        };
        let bricks = vec![brick("h1:24007", "/b1"), brick("h2:24007", "/b2")];
        let mut t = task(RebalanceKind::RemoveBrick {
            bricks: vec![bricks[1].id],
        });
        let mut spec = VolumeSpec {
            name: "gv0".into(),
            id: Uuid::nil(),
            state: cairn_common::proto::VolumeState::Started,
            bricks,
            options: BTreeMap::new(),
            version: 1,
            replica: 1,
            arbiter: false,
            layout_commit: 1,
            decommissioned: vec![],
            task: None,
        };
        assert!(task_block("gv0", Some(&spec)).contains("There are no active volume tasks"));
        for n in ["10.0.0.1:24007", "10.0.0.2:24007"] {
            t.finished.insert(n.into(), row(n, 0, 0, TaskState::Completed));
        }
        spec.task = Some(t.clone());
        let expected = " \nTask Status of Volume gv0
------------------------------------------------------------------------------
Task                 : Remove brick        
ID                   : 00000000-0000-0000-0000-000000000000
Removed bricks:     
h2:/b2              
Status               : completed           
 \n";
        assert_eq!(task_block("gv0", Some(&spec)), expected);
        t.kind = RebalanceKind::Migrate { force: false };
        t.finished.get_mut("10.0.0.1:24007").unwrap().state = TaskState::Failed;
        spec.task = Some(t.clone());
        let text = task_block("gv0", Some(&spec));
        assert!(text.contains("Task                 : Rebalance"));
        assert!(text.contains("Status               : failed"));
        t.finished.clear();
        assert_eq!(task_state(&t), "in progress");
        t.stopped = true;
        assert_eq!(task_state(&t), "stopped");
    }
}
