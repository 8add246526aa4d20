//! A real network between a mount and its daemon: cairnd runs in a network
//! namespace of its own, joined to the test's namespace by a veth pair on
//! test addresses (198.18.0.0/15, the benchmarking range). Cutting the link
//! must fail requests with an error within the call timeout, never hang,
//! and the same mount must recover once the link is back.

use cairn_tests::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with one veth link to ours; torn down (with what runs in it)
/// on drop.
struct TestHost {
    ns: String,
    host_if: String,
    daemon: Option<Child>,
}

impl TestHost {
    fn new(index: u8) -> TestHost {
        let tag = format!("{}{index}", std::process::id() % 100_000);
        let (ns, host_if, peer_if) = (format!("cairn-t{tag}"), format!("ch{tag}"), format!("cp{tag}"));
        let base = format!("198.18.{index}");
        sh(&["ip", "netns", "add", &ns]);
        let h = TestHost {
            ns: ns.clone(),
            host_if: host_if.clone(),
            daemon: None,
        };
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if]);
        sh(&["ip", "link", "set", &peer_if, "netns", &ns]);
        sh(&["ip", "addr", "add", &format!("{base}.1/30"), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{base}.2/30"),
            "dev",
            &peer_if,
        ]);
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &peer_if, "up"]);
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        h
    }

    fn link(&self, up: bool) {
        sh(&["ip", "link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

#[test]
fn a_cut_link_fails_requests_in_time_and_the_mount_recovers() {
    preflight();
    watchdog();
    let tmp = temp_dir("cairn-part-");
    let dir = tmp.path();
    let mut host = TestHost::new(1 + (std::process::id() % 200) as u8);
    let addr = format!("198.18.{}.2:24007", 1 + (std::process::id() % 200) as u8);
    let state = dir.join("state");
    let log = std::fs::File::create(dir.join("cairnd.log")).unwrap();
    host.daemon = Some(
        Command::new("ip")
            .args(["netns", "exec", &host.ns])
            .arg(bin("cairnd"))
            .args(["--listen", &addr, "--state-dir"])
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let cli = |args: &[&str]| {
        let out = Command::new(bin("cairn"))
            .arg("--state-dir")
            .arg(&state)
            .args(["--node", &addr])
            .args(args)
            .output()
            .unwrap();
        CliOutput::from(out)
    };
    let up = poll(Duration::from_secs(15), || cli(&["volume", "info"]).ok().then_some(()));
    assert!(
        up.is_some(),
        "cairnd in its namespace did not answer:\n{}",
        tail(&dir.join("cairnd.log"), 20)
    );
    let brick = format!("{addr}:{}", dir.join("brick").display());
    assert!(cli(&["volume", "create", "pv", &brick, "force"]).ok());
    assert!(cli(&["volume", "start", "pv"]).ok());

    let mountpoint = dir.join("mnt");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let opts = format!(
        "state-dir={},log-file={},call-timeout=2,attribute-timeout=0,entry-timeout=0",
        state.display(),
        dir.join("mnt.log").display()
    );
    let out = Command::new(bin("mount-cairn"))
        .arg(format!("{addr}:/pv"))
        .arg(&mountpoint)
        .args(["-o", &opts])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
    let mut m = Mount::adopt(&mountpoint, &dir.join("mnt.log"));
    std::fs::write(m.p("f"), b"across the link").unwrap();

    // Cut the link: a request fails with an error within the call timeout.
    host.link(false);
    let p = m.p("f");
    let started = std::time::Instant::now();
    let cut = with_timeout(Duration::from_secs(30), move || std::fs::read(p)).expect("a read over a cut link hung");
    let err = cut.expect_err("a read over a cut link succeeded");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EIO) | Some(libc::ENOTCONN)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failing took {:?}",
        started.elapsed()
    );

    // Heal the link: the same mount works again, with the data intact.
    host.link(true);
    let p = m.p("f");
    let back = with_timeout(Duration::from_secs(60), move || {
        poll(Duration::from_secs(45), || std::fs::read(&p).ok())
    });
    assert_eq!(
        back.flatten().as_deref(),
        Some(&b"across the link"[..]),
        "no recovery after the link came back"
    );
    m.unmount();
}
