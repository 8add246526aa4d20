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

#[test]
fn cairnd_logs_to_a_file_and_reopens_it_on_sighup() {
    preflight();
    watchdog();
    let dir = temp_dir("cairn-log-");
    let log = dir.path().join("logs/cairnd.log");
    let host = unique_host();
    let port = free_udp_port(&host);
    let mut child = Command::new(bin("cairnd"))
        .args(["--listen", &format!("{host}:{port}"), "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--log-file")
        .arg(&log)
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let serving = poll(std::time::Duration::from_secs(10), || {
        read(&log).contains("cairnd serving").then_some(())
    });
    assert!(
        serving.is_some(),
        "no start-up record in the log file: {:?}",
        read(&log)
    );
    // logrotate's move-then-signal.
    let rotated = dir.path().join("logs/cairnd.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reopened = poll(std::time::Duration::from_secs(10), || {
        read(&log).contains("log file reopened").then_some(())
    });
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(reopened.is_some(), "no record in the reopened log file");
    assert!(status.success(), "cairnd exited with {status}");
    assert!(read(&rotated).contains("cairnd serving"));
    assert!(
        read(&log).contains("shutting down"),
        "records after SIGHUP went elsewhere"
    );
}

#[test]
fn a_mount_logs_to_its_file_and_reopens_it_on_sighup() {
    let c = Cluster::unmounted();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let log = c.dir.join("logs/m.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut m = Mount::new(&c.daemon, &c.volume, &c.dir.join("m"), &log, "");
    assert!(read(&log).contains("mounted"), "no start-up record: {:?}", read(&log));
    let pid = m.server_pid().expect("the serving process");

    // logrotate's move-then-signal: the mount lives on, in a fresh file.
    let rotated = c.dir.join("logs/m.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: a plain signal to the mount's own serving process.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reopened = poll(std::time::Duration::from_secs(10), || {
        read(&log).contains("log file reopened").then_some(())
    });
    assert!(
        reopened.is_some(),
        "no record in the reopened log: {:?}; the rotated one: {}; alive: {}",
        read(&log),
        read(&rotated),
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    );
    std::fs::write(m.p("after-hup"), b"still serving").unwrap();
    assert_eq!(std::fs::read(m.p("after-hup")).unwrap(), b"still serving");
    assert!(m.unmount());
    assert!(read(&rotated).contains("mounted"));
    assert!(
        read(&log).contains("session ended"),
        "records after SIGHUP went elsewhere: {:?}",
        read(&log)
    );
}

#[test]
fn a_mount_without_log_file_logs_under_var_log_cairn() {
    let c = Cluster::unmounted();
    let dir = c.dir.join("default-log");
    std::fs::create_dir_all(&dir).unwrap();
    register_mount(&dir);
    // gluster's naming: the mount point's path, slashes as dashes.
    let name = dir.to_str().unwrap().trim_matches('/').replace('/', "-");
    let log = std::path::Path::new("/var/log/cairn").join(format!("mnt-{name}.log"));
    let _ = std::fs::remove_file(&log);
    let out = Command::new(bin("mount-cairn"))
        .arg(format!("{}:/{}", c.daemon.addr, c.volume))
        .arg(&dir)
        .arg("-o")
        .arg(format!("state-dir={}", c.daemon.state_dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut m = Mount::adopt(&dir, &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let unmounted = m.unmount();
    let _ = std::fs::remove_file(&log);
    assert!(unmounted);
    assert!(text.contains("mounted"), "{}: {text:?}", log.display());
}

#[test]
fn the_mount_helper_man_page_documents_every_option() {
    // The helper names the options it knows in its error for an unknown one.
    let out = Command::new(bin("mount-cairn"))
        .args(["127.0.0.1:/vol", "/nonexistent", "-o", "no-such-option"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let known = err
        .split(": use ")
        .nth(1)
        .and_then(|rest| rest.split(" (see mount.cairn(8))").next())
        .unwrap_or_else(|| panic!("no option list in: {err}"));
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/man/mount.cairn.8")).unwrap();
    // The page escapes dashes for troff.
    let page = page.replace("\\-", "-");
    let options: Vec<&str> = known.split_whitespace().collect();
    assert!(options.len() >= 10 && options.contains(&"acl"), "{known}");
    for option in options {
        let word = option.trim_end_matches('=');
        assert!(
            page.contains(&format!(".B {word}\n"))
                || page.contains(&format!(".BI {word}= "))
                || page.contains(&format!(".BR {word} "))
                || page.contains(&format!("\", {word}=\" ")),
            "mount.cairn.8 does not document {option}"
        );
    }
}

#[test]
fn the_packaged_service_logs_under_var_log_cairn_and_reloads_on_sighup() {
    let packaging = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging");
    let read = |rel: &str| std::fs::read_to_string(format!("{packaging}/{rel}")).unwrap();
    let unit = read("systemd/cairnd.service");
    for line in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "$CAIRND_OPTS"] {
        assert!(unit.lines().any(|l| l.contains(line)), "cairnd.service lacks {line}");
    }
    let defaults = read("systemd/cairnd.default");
    assert!(
        defaults
            .lines()
            .any(|l| l.starts_with("CAIRND_OPTS=") && l.contains("--log-file /var/log/cairn/cairnd.log")),
        "{defaults}"
    );
    let rotate = read("logrotate/cairn");
    assert!(
        rotate.starts_with("#") && rotate.contains("/var/log/cairn/*.log {"),
        "{rotate}"
    );
    assert!(
        rotate.contains("--signal=HUP cairnd.service") && rotate.contains("kill -HUP"),
        "{rotate}"
    );
    assert!(!rotate.contains("copytruncate"), "rotation must move and signal");
}

/// systemd's side of `Type=notify`: a datagram socket named by NOTIFY_SOCKET.
#[test]
fn cairnd_tells_systemd_when_it_serves_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    preflight();
    watchdog();
    let dir = temp_dir("cairn-notify-");
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let host = unique_host();
    let addr = format!("{host}:{}", free_udp_port(&host));
    let state = dir.path().join("state");
    let mut child = Command::new(bin("cairnd"))
        .args(["--listen", &addr, "--state-dir"])
        .arg(&state)
        .arg("--log-file")
        .arg(dir.path().join("cairnd.log"))
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("no READY=1 from cairnd");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means ready: the CLI is answered at once, and a reload
    // (SIGHUP) right away does not end the daemon.
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let out = Command::new(bin("cairn"))
        .arg("--state-dir")
        .arg(&state)
        .args(["--node", &addr, "pool", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("localhost"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended cairnd");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = socket.recv(&mut buf).expect("no STOPPING=1 from cairnd");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}
