//! Volume life cycle through the real CLI, daemon restarts, and what mounts
//! see along the way.

use cairn_tests::{
    is_cairn_mount, mounts_entry, pattern, poll, read_file, temp_dir_in, with_timeout, write_file, CliOutput, Cluster,
    Mount,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[track_caller]
fn refused(o: &CliOutput, needle: &str, what: &str) {
    assert!(!o.ok(), "{what}: succeeded: {}", o.stdout);
    let err = o.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{what}: one line on stderr, got:\n{err}");
    assert!(err.contains(needle), "{what}: stderr should mention {needle:?}: {err}");
}

fn mount_at(c: &Cluster, vol: &str, name: &str, extra: &str) -> Mount {
    Mount::new(
        &c.daemon,
        vol,
        &c.dir.join(name),
        &c.dir.join(format!("{name}.log")),
        extra,
    )
}

fn try_mount_at(c: &Cluster, vol: &str, name: &str) -> Result<Mount, CliOutput> {
    Mount::try_new(
        &c.daemon,
        vol,
        &c.dir.join(name),
        &c.dir.join(format!("{name}.log")),
        "",
    )
}

/// The port, RDMA port, online and pid columns of the status line of the
/// brick labelled `label` (parsed after the label, so a long label that runs
/// into the next column still parses).
fn brick_columns(status: &str, label: &str) -> Vec<String> {
    let prefix = format!("Brick {label}");
    let line = status
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for brick {label} in:\n{status}"));
    let cols: Vec<String> = line[prefix.len()..].split_whitespace().map(String::from).collect();
    assert_eq!(cols.len(), 4, "status line {line:?}");
    cols
}

fn volumes(c: &Cluster) -> Vec<serde_json::Value> {
    c.daemon.info_json()["volumes"]
        .as_array()
        .expect("volumes array")
        .clone()
}

/// A directory on a file system other than `/` (tmpfs), for bricks that
/// need no `force`.
fn non_root_fs_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let root_dev = std::fs::metadata("/").expect("stat /").dev();
    let shm_dev = std::fs::metadata(shm)
        .expect("/dev/shm is needed for a brick off the root file system")
        .dev();
    assert_ne!(shm_dev, root_dev, "/dev/shm must not be on the root file system");
    temp_dir_in(shm, "cairn-test-")
}

#[test]
fn root_partition_bricks_need_force() {
    let c = Cluster::bare();
    let brick = c.dir.join("b1");
    let b = c.daemon.brick_arg(&brick);
    let o = c.daemon.cli(&["volume", "create", "gv", &b]);
    refused(&o, "root partition", "create on the root file system");
    assert_eq!(c.daemon.cli_ok(&["volume", "info"]).trim(), "No volumes present");
    assert!(!brick.exists(), "a refused create made the brick directory");
    let out = c.daemon.cli_ok(&["volume", "create", "gv", &b, "force"]);
    assert!(out.contains("success"), "{out}");
    assert_eq!(volumes(&c).len(), 1);
}

#[test]
fn create_start_info_status() {
    let c = Cluster::bare();
    let brick = c.dir.join("b1");
    let b = c.daemon.brick_arg(&brick);
    c.daemon.cli_ok(&["volume", "create", "gv", &b, "force"]);
    let info = c.daemon.cli_ok(&["volume", "info", "gv"]);
    for want in [
        "Volume Name: gv",
        "Status: Created",
        "Number of Bricks: 1",
        &format!("Brick1: {}:{}", c.daemon.host, brick.display()),
    ] {
        assert!(info.contains(want), "volume info lacks {want:?}:\n{info}");
    }
    let v = volumes(&c);
    assert_eq!(v[0]["name"], "gv");
    assert_eq!(v[0]["state"], "Created");
    assert_eq!(v[0]["bricks"][0]["path"], brick.display().to_string());
    refused(
        &c.daemon.cli(&["volume", "status", "gv"]),
        "not started",
        "status of a created volume",
    );
    // The brick is prepared on create.
    assert!(brick.join(".cairn").is_dir(), "create prepares the brick");

    c.daemon.cli_ok(&["volume", "start", "gv"]);
    let info = c.daemon.cli_ok(&["volume", "info"]);
    assert!(info.contains("Status: Started"), "{info}");
    let status = c.daemon.cli_ok(&["volume", "status", "gv"]);
    let label = format!("{}:{}", c.daemon.host, brick.display());
    let cols = brick_columns(&status, &label);
    assert_eq!(cols[0], c.daemon.port.to_string(), "port column: {status}");
    assert_eq!(cols[2], "Y", "online column: {status}");
    assert_eq!(
        cols[3],
        c.daemon.pid().expect("pid").to_string(),
        "pid column: {status}"
    );
    let js = c.daemon.status_json("gv");
    assert_eq!(js["ok"], true);
    let b0 = &js["status"][0]["bricks"][0];
    assert_eq!(b0["online"], true, "{js}");
    assert_eq!(b0["port"], c.daemon.port, "{js}");
    assert_eq!(b0["pid"], c.daemon.pid().expect("pid"), "{js}");
    // `volume status` without a name lists it too.
    let all = c.daemon.cli_ok(&["volume", "status"]);
    assert!(all.contains("Status of volume: gv"), "{all}");
    refused(
        &c.daemon.cli(&["volume", "start", "gv"]),
        "already started",
        "start a started volume",
    );
    assert_eq!(volumes(&c)[0]["state"], "Started");
}

#[test]
fn status_columns_stay_apart_for_long_brick_paths() {
    let c = Cluster::bare();
    let brick = c.dir.join("a-brick-directory-with-a-rather-long-name");
    c.daemon.create_started_volume("gv", &brick);
    let status = c.daemon.cli_ok(&["volume", "status", "gv"]);
    let label = format!("{}:{}", c.daemon.host, brick.display());
    let line = status
        .lines()
        .find(|l| l.starts_with("Brick "))
        .unwrap_or_else(|| panic!("no brick line in:\n{status}"));
    let after = line
        .strip_prefix(&format!("Brick {label}"))
        .unwrap_or_else(|| panic!("brick line {line:?} does not name {label}"));
    assert!(
        after.starts_with(char::is_whitespace),
        "the brick column runs into the port column: {line:?}"
    );
}

#[test]
fn stop_fails_mount_operations_and_start_brings_it_back() {
    let c = Cluster::unmounted();
    let m = mount_at(&c, "vol", "m1", "attribute-timeout=0,entry-timeout=0");
    let data = pattern(11, 200_000);
    write_file(&m.p("kept"), &data);
    c.daemon.cli_ok(&["volume", "stop", "vol"]);
    assert_eq!(volumes(&c)[0]["state"], "Stopped");
    refused(
        &c.daemon.cli(&["volume", "stop", "vol"]),
        "not in the started state",
        "stop a stopped volume",
    );

    // Operations on the mount now fail with an error, promptly.
    let p = m.path.clone();
    let outcome = with_timeout(Duration::from_secs(30), move || {
        let create = std::fs::write(p.join("new"), b"x");
        let read = std::fs::read(p.join("kept"));
        let list = std::fs::read_dir(&p).and_then(|d| d.collect::<Result<Vec<_>, _>>());
        (
            create.map_err(|e| e.to_string()),
            read.map(|d| d.len()).map_err(|e| e.to_string()),
            list.map(|l| l.len()).map_err(|e| e.to_string()),
        )
    })
    .expect("operations on a stopped volume's mount hung for 30 s");
    assert!(outcome.0.is_err(), "create on a stopped volume: {:?}", outcome.0);
    assert!(outcome.1.is_err(), "read on a stopped volume: {:?}", outcome.1);
    assert!(outcome.2.is_err(), "readdir on a stopped volume: {:?}", outcome.2);
    // A new mount of a stopped volume is refused.
    let o = try_mount_at(&c, "vol", "m-stopped")
        .err()
        .expect("mounting a stopped volume");
    assert!(!o.stderr.trim().is_empty(), "mount failure says why");
    assert!(!is_cairn_mount(&c.dir.join("m-stopped")));

    c.daemon.cli_ok(&["volume", "start", "vol"]);
    let m2 = mount_at(&c, "vol", "m2", "");
    assert!(read_file(&m2.p("kept")) == data, "data back after restart");
    write_file(&m2.p("after"), b"after start");
    assert_eq!(read_file(&c.b("after")), b"after start");
    drop(m2);
    drop(m);
}

#[test]
fn delete_requires_stop_and_keeps_the_data() {
    let c = Cluster::unmounted();
    let m = mount_at(&c, "vol", "m1", "");
    write_file(&m.p("precious"), b"keep me");
    drop(m);
    refused(
        &c.daemon.cli(&["volume", "delete", "vol"]),
        "stopped",
        "delete a started volume",
    );
    assert_eq!(volumes(&c).len(), 1);
    assert_eq!(volumes(&c)[0]["state"], "Started");
    c.daemon.cli_ok(&["volume", "stop", "vol"]);
    c.daemon.cli_ok(&["volume", "delete", "vol"]);
    assert_eq!(c.daemon.cli_ok(&["volume", "info"]).trim(), "No volumes present");
    assert_eq!(read_file(&c.b("precious")), b"keep me", "data stays on the brick");
    refused(
        &c.daemon.cli(&["volume", "delete", "vol"]),
        "does not exist",
        "delete twice",
    );
    // Re-created with force on the same brick, the old data is served.
    let b = c.daemon.brick_arg(&c.brick);
    c.daemon.cli_ok(&["volume", "create", "again", &b, "force"]);
    c.daemon.cli_ok(&["volume", "start", "again"]);
    let m = mount_at(&c, "again", "m2", "");
    assert_eq!(read_file(&m.p("precious")), b"keep me");
}

#[test]
fn bricks_of_another_volume_need_force() {
    let shm = non_root_fs_dir();
    let c = Cluster::bare();
    let brick = shm.path().join("brick");
    let b = c.daemon.brick_arg(&brick);
    // Off the root file system, no force is needed.
    c.daemon.cli_ok(&["volume", "create", "first", &b]);
    c.daemon.cli_ok(&["volume", "start", "first"]);
    let m = mount_at(&c, "first", "m1", "");
    write_file(&m.p("f"), b"tmpfs brick");
    drop(m);
    c.daemon.cli_ok(&["volume", "stop", "first"]);
    c.daemon.cli_ok(&["volume", "delete", "first"]);
    refused(
        &c.daemon.cli(&["volume", "create", "second", &b]),
        "already part of a volume",
        "reuse a brick without force",
    );
    assert_eq!(c.daemon.cli_ok(&["volume", "info"]).trim(), "No volumes present");
    // A directory inside the old brick is refused too.
    let inner = c.daemon.brick_arg(&brick.join("sub"));
    refused(
        &c.daemon.cli(&["volume", "create", "second", &inner]),
        "already part of a volume",
        "a brick inside an old brick",
    );
    c.daemon.cli_ok(&["volume", "create", "second", &b, "force"]);
    c.daemon.cli_ok(&["volume", "start", "second"]);
    let m = mount_at(&c, "second", "m2", "");
    assert_eq!(read_file(&m.p("f")), b"tmpfs brick");
}

#[test]
fn restart_keeps_serving_the_volume() {
    let mut c = Cluster::unmounted();
    let m = mount_at(&c, "vol", "m1", "");
    let data = pattern(12, 500_000);
    write_file(&m.p("before-restart"), &data);
    std::fs::create_dir(m.p("dir")).expect("mkdir");
    write_file(&m.p("dir/inner"), b"inner");
    drop(m);
    let info_before = c.daemon.info_json();
    let status = c.restart_daemon().expect("cairnd exited after SIGTERM");
    assert!(status.success(), "cairnd exit after SIGTERM: {status}");
    assert_eq!(c.daemon.info_json(), info_before, "configuration kept");
    let js = c.daemon.status_json("vol");
    assert_eq!(js["status"][0]["bricks"][0]["online"], true, "{js}");
    let m = mount_at(&c, "vol", "m2", "");
    assert!(read_file(&m.p("before-restart")) == data);
    assert_eq!(read_file(&m.p("dir/inner")), b"inner");
    write_file(&m.p("dir/after"), b"after");
    assert_eq!(read_file(&c.b("dir/after")), b"after");
}

#[test]
fn a_mount_survives_a_daemon_restart() {
    let mut c = Cluster::unmounted();
    let m = mount_at(&c, "vol", "m1", "attribute-timeout=0,entry-timeout=0");
    write_file(&m.p("old"), b"old data");
    let status = c.restart_daemon().expect("cairnd exited after SIGTERM");
    assert!(status.success(), "cairnd exit after SIGTERM: {status}");
    let p = m.path.clone();
    let back = with_timeout(Duration::from_secs(40), move || {
        poll(Duration::from_secs(30), || {
            std::fs::write(p.join("new"), b"new data").ok()?;
            std::fs::read(p.join("old")).ok()
        })
    })
    .expect("mount operations hung after the daemon restarted");
    assert_eq!(
        back.as_deref(),
        Some(&b"old data"[..]),
        "the mount did not recover within 30 s of the daemon restart"
    );
    assert_eq!(read_file(&c.b("new")), b"new data");
}

#[test]
fn a_brick_without_its_volume_mark_is_not_served() {
    let mut c = Cluster::unmounted();
    let m = mount_at(&c, "vol", "m1", "");
    write_file(&m.p("data"), b"original");
    drop(m);
    c.daemon.stop();
    let moved: PathBuf = c.dir.join("brick.moved");
    std::fs::rename(&c.brick, &moved).expect("move the brick away");
    std::fs::create_dir(&c.brick).expect("an empty directory in its place");
    let (host, port) = (c.daemon.host.clone(), c.daemon.port);
    c.daemon = cairn_tests::Daemon::start_at(&c.daemon.state_dir, &c.daemon.log, &host, port);

    let js = c.daemon.status_json("vol");
    assert_eq!(js["status"][0]["bricks"][0]["online"], false, "{js}");
    let text = c.daemon.cli_ok(&["volume", "status", "vol"]);
    let label = format!("{}:{}", c.daemon.host, c.brick.display());
    let cols = brick_columns(&text, &label);
    assert_eq!(cols[2], "N", "online column: {text}");
    assert_eq!((cols[0].as_str(), cols[3].as_str()), ("N/A", "N/A"), "{text}");
    let o = try_mount_at(&c, "vol", "m2").err().expect("mounting an unserved brick");
    assert!(!o.stderr.trim().is_empty(), "the mount failure says why");
    assert!(!is_cairn_mount(&c.dir.join("m2")));
    assert_eq!(
        std::fs::read_dir(&c.brick).expect("readdir").count(),
        0,
        "the daemon wrote into the unmarked directory"
    );

    // Put the real brick back: served again after a restart.
    c.daemon.stop();
    std::fs::remove_dir(&c.brick).expect("rmdir the impostor");
    std::fs::rename(&moved, &c.brick).expect("restore the brick");
    c.daemon = cairn_tests::Daemon::start_at(&c.daemon.state_dir, &c.daemon.log, &host, port);
    let js = c.daemon.status_json("vol");
    assert_eq!(js["status"][0]["bricks"][0]["online"], true, "{js}");
    let m = mount_at(&c, "vol", "m3", "");
    assert_eq!(read_file(&m.p("data")), b"original");
}

#[test]
fn mounts_show_up_and_go_away() {
    let c = Cluster::unmounted();
    let mut m = mount_at(&c, "vol", "m1", "");
    let (source, fstype) = mounts_entry(&m.path).expect("listed in /proc/mounts");
    assert_eq!(fstype, "fuse.cairn");
    assert_eq!(source, format!("{}:/vol", c.daemon.addr));
    let pid = m.server_pid().expect("a background process serves the mount");
    write_file(&m.p("x"), b"x");
    assert!(m.unmount(), "the mount process {pid} did not exit after umount");
    assert!(!is_cairn_mount(&m.path), "still mounted");
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.is_empty())
                .unwrap_or(true),
        "mount process {pid} still running"
    );

    // Failures: no such volume, a volume that is not started, a missing
    // mount point, an unknown option. Each exits non-zero, says why and
    // leaves nothing mounted.
    let b2 = c.daemon.brick_arg(&c.dir.join("b2"));
    c.daemon.cli_ok(&["volume", "create", "notstarted", &b2, "force"]);
    for (vol, name) in [("nosuchvol", "f1"), ("notstarted", "f2")] {
        let o = try_mount_at(&c, vol, name)
            .err()
            .unwrap_or_else(|| panic!("mounting {vol}"));
        assert!(!o.stderr.trim().is_empty(), "mounting {vol}: no message");
        assert!(!is_cairn_mount(&c.dir.join(name)), "{vol} got mounted");
    }
    let missing = c.dir.join("no/such/dir");
    let o = std::process::Command::new(cairn_tests::bin("mount-cairn"))
        .arg(format!("{}:/vol", c.daemon.addr))
        .arg(&missing)
        .arg("-o")
        .arg(format!(
            "state-dir={},log-file={}",
            c.daemon.state_dir.display(),
            c.dir.join("missing.log").display()
        ))
        .output()
        .expect("run mount-cairn");
    assert!(!o.status.success(), "mount on a missing mount point");
    assert!(!o.stderr.is_empty(), "no message for a missing mount point");
    std::fs::create_dir(c.dir.join("badopt")).expect("mkdir");
    let o = std::process::Command::new(cairn_tests::bin("mount-cairn"))
        .arg(format!("{}:/vol", c.daemon.addr))
        .arg(c.dir.join("badopt"))
        .arg("-o")
        .arg(format!("state-dir={},no-such-option=1", c.daemon.state_dir.display()))
        .output()
        .expect("run mount-cairn");
    assert!(!o.status.success(), "an unknown mount option was accepted");
    assert!(!is_cairn_mount(&c.dir.join("badopt")));
}

#[test]
fn status_detail_shows_each_bricks_file_system() {
    let c = Cluster::unmounted();
    let out = c.daemon.cli_ok(&["volume", "status", &c.volume, "detail"]);
    for field in [
        "Brick                : Brick",
        "File System          :",
        "Total Disk Space     :",
        "Free Inodes          :",
    ] {
        assert!(out.contains(field), "missing {field:?} in:\n{out}");
    }
    let json = c.daemon.status_json(&c.volume);
    let detail = &json["status"][0]["bricks"][0]["detail"];
    assert!(detail["total_bytes"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(!detail["fs_type"].as_str().unwrap_or("").is_empty(), "{json}");
    let bad = c.daemon.cli(&["volume", "status", &c.volume, "details-please"]);
    assert!(!bad.ok() && bad.stderr.lines().count() == 1, "{bad:?}");
}

#[test]
fn status_clients_and_mem_show_the_mount_and_the_process() {
    let c = Cluster::new();
    write_file(&c.p("f"), &[1u8; 10000]);
    let _ = read_file(&c.p("f"));
    let out = c.daemon.cli_ok(&["volume", "status", &c.volume, "clients"]);
    assert!(out.contains("Clients connected : 1"), "{out}");
    assert!(out.contains("client-local-"), "the mount's identity is missing:\n{out}");
    let json = c.daemon.status_json(&c.volume);
    let client = &json["status"][0]["bricks"][0]["clients"][0];
    assert!(client["bytes_written"].as_u64().unwrap_or(0) >= 10000, "{json}");
    let mem = c.daemon.cli_ok(&["volume", "status", &c.volume, "mem"]);
    assert!(mem.contains("Resident set size") && mem.contains("Threads"), "{mem}");
}

#[test]
fn a_frozen_or_killed_daemon_never_hangs_the_mount() {
    let mut c = Cluster::unmounted();
    let m = mount_at(&c, "vol", "m1", "attribute-timeout=0,entry-timeout=0,call-timeout=2");
    write_file(&m.p("f"), b"data");
    let pid = c.daemon.pid().expect("cairnd pid") as i32;
    // Frozen (SIGSTOP): requests time out with EIO after call-timeout.
    // SAFETY: plain signal to a process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let p = m.p("f");
    let started = std::time::Instant::now();
    let frozen =
        with_timeout(Duration::from_secs(30), move || std::fs::read(p)).expect("a read on a frozen daemon hung");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let err = frozen.expect_err("a frozen daemon answered");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    // Thawed: the same mount works again.
    let p = m.p("f");
    let back = with_timeout(Duration::from_secs(30), move || {
        poll(Duration::from_secs(20), || std::fs::read(&p).ok())
    });
    assert_eq!(
        back.flatten().as_deref(),
        Some(&b"data"[..]),
        "the mount did not recover after SIGCONT"
    );
    // Killed (SIGKILL) and restarted: the mount reconnects by itself.
    let (host, port, state, log) = (
        c.daemon.host.clone(),
        c.daemon.port,
        c.daemon.state_dir.clone(),
        c.daemon.log.clone(),
    );
    c.daemon.kill();
    let p = m.p("f");
    let dead = with_timeout(Duration::from_secs(30), move || std::fs::read(p)).expect("a read on a dead daemon hung");
    assert!(dead.is_err(), "a dead daemon answered");
    c.daemon = cairn_tests::Daemon::start_at(&state, &log, &host, port);
    let p = m.p("f");
    let back = with_timeout(Duration::from_secs(30), move || {
        poll(Duration::from_secs(20), || std::fs::read(&p).ok())
    });
    assert_eq!(
        back.flatten().as_deref(),
        Some(&b"data"[..]),
        "the mount did not recover after the restart"
    );
}
