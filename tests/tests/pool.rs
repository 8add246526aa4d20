//! The trusted pool, end to end: real `cairnd` processes on distinct
//! loopback addresses probed into one pool; volumes spanning them, mounted
//! through one node and used while nodes die; configuration changes that
//! need a majority; nodes of another pool refused.

use cairn_tests::*;
use std::path::Path;
use std::time::Duration;

fn peers_json(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.cli_ok(&["--json", "peer", "status"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["peers"].as_array().expect("peers array").clone()
}

fn option(d: &Daemon, vol: &str, key: &str) -> String {
    let out = d.cli_ok(&["--json", "volume", "get", vol, key]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["options"][0]["value"].as_str().expect("value").to_string()
}

/// The brick directory (by name) holding `file` at its root, if any.
fn holder<'a>(pool: &Pool, bricks: &'a [&'a str], file: &str) -> Option<&'a str> {
    bricks.iter().copied().find(|b| pool.brick_dir(b).join(file).exists())
}

#[test]
fn probe_lists_every_member_from_every_node() {
    let pool = Pool::new(3);
    for i in 0..3 {
        let peers = peers_json(pool.node(i));
        assert_eq!(peers.len(), 3, "node {i}: {peers:?}");
        assert!(peers.iter().all(|p| p["connected"] == true), "node {i}: {peers:?}");
        assert_eq!(peers.iter().filter(|p| p["is_self"] == true).count(), 1);
    }
    let status = pool.node(1).cli_ok(&["peer", "status"]);
    assert!(status.starts_with("Number of Peers: 2\n"), "{status}");
    assert_eq!(
        status.matches("State: Peer in Cluster (Connected)").count(),
        2,
        "{status}"
    );
    let list = pool.node(2).cli_ok(&["pool", "list"]);
    assert!(list.starts_with("UUID\t\t\t\t\tHostname \tState\n"), "{list}");
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(
        list.lines().last().unwrap().contains("\tlocalhost\tConnected"),
        "{list}"
    );
    // Probing a member again, or oneself, changes nothing.
    let again = pool.node(0).cli_ok(&["peer", "probe", &pool.addr(2)]);
    assert!(again.contains("already in peer list"), "{again}");
    let me = pool.node(0).cli_ok(&["peer", "probe", &pool.addr(0)]);
    assert!(me.contains("Probe on localhost not needed"), "{me}");
    assert_eq!(peers_json(pool.node(0)).len(), 3);
    // Bad arguments are refused before anything is sent.
    let o = pool.node(0).cli(&["peer", "detach", &pool.addr(1), "now"]);
    assert!(!o.ok() && o.stderr.contains("did you mean 'force'"), "{o:?}");
}

#[test]
fn a_volume_across_nodes_keeps_working_when_its_volfile_server_dies() {
    let mut pool = Pool::new(4);
    let bricks = ["b0", "b1", "b2", "b3"];
    let args: Vec<String> = (0..4).map(|i| pool.brick(i, bricks[i])).collect();
    let mut create = vec!["volume", "create", "gv"];
    create.extend(args.iter().map(String::as_str));
    create.push("force");
    // Created through one member, started through another, seen by all.
    pool.node(1).cli_ok(&create);
    pool.node(2).cli_ok(&["volume", "start", "gv"]);
    for i in 0..4 {
        let info = pool.node(i).info_json();
        assert_eq!(info["volumes"][0]["state"], "Started", "node {i}: {info}");
    }
    let status = pool.node(3).status_json("gv");
    let bricks_status = status["status"][0]["bricks"].as_array().unwrap().clone();
    assert_eq!(bricks_status.len(), 4);
    for (i, b) in bricks_status.iter().enumerate() {
        assert_eq!(b["online"], true, "{b}");
        assert_eq!(b["port"], serde_json::json!(pool.port(i)), "{b}");
    }
    let text = pool.node(0).cli_ok(&["volume", "status", "gv"]);
    assert_eq!(text.matches("Brick ").count(), 4, "{text}");

    // Mounted through node 1, with node 0 as the backup volfile server.
    let backup = format!("backup-volfile-servers={}", pool.addr(0));
    let mnt = pool.mount(1, "gv", "mnt", &backup);
    for i in 0..40 {
        std::fs::write(mnt.join(format!("f{i}")), format!("data {i}")).unwrap();
    }
    let used: std::collections::BTreeSet<&str> = (0..40)
        .filter_map(|i| holder(&pool, &bricks, &format!("f{i}")))
        .collect();
    assert!(used.len() >= 3, "40 files landed on only {used:?}");

    // The node the mount came from dies: files on the other nodes' bricks
    // stay readable and writable.
    pool.kill(1);
    let mut checked = 0;
    for i in 0..40 {
        let name = format!("f{i}");
        if holder(&pool, &bricks, &name) == Some("b1") {
            continue;
        }
        assert_eq!(std::fs::read_to_string(mnt.join(&name)).unwrap(), format!("data {i}"));
        std::fs::write(mnt.join(&name), format!("again {i}")).unwrap();
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} files were off node 1");

    // An option set on another node applies to the running bricks and
    // mount without a remount: refusing the mount's address locks it out,
    // resetting lets it back in.
    pool.node(0)
        .cli_ok(&["volume", "set", "gv", "auth.reject", "127.0.0.1"]);
    let first_elsewhere = (0..40)
        .map(|i| format!("f{i}"))
        .find(|n| holder(&pool, &bricks, n).is_some_and(|b| b != "b1"))
        .unwrap();
    let refused = poll(Duration::from_secs(10), || {
        std::fs::read(mnt.join(&first_elsewhere))
            .err()
            .filter(|e| e.raw_os_error() == Some(libc::EACCES))
    });
    assert!(refused.is_some(), "auth.reject never applied to the running volume");
    pool.node(3).cli_ok(&["volume", "reset", "gv", "auth.reject"]);
    let back = poll(Duration::from_secs(10), || {
        std::fs::read(mnt.join(&first_elsewhere)).ok()
    });
    assert!(back.is_some(), "the reset never let the mount back in");

    // The dead node returns and serves its brick again; the mount sees
    // every file.
    pool.restart(1);
    let all = poll(Duration::from_secs(20), || {
        (0..40).all(|i| mnt.join(format!("f{i}")).exists()).then_some(())
    });
    assert!(all.is_some(), "files on the restarted node did not come back");
}

#[test]
fn changes_need_a_majority_and_returning_nodes_catch_up() {
    let mut pool = Pool::new(4);
    let b = pool.brick(0, "b0");
    pool.node(0).cli_ok(&["volume", "create", "gv", &b, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "gv"]);

    // One of four down: three is a majority.
    pool.stop(3);
    pool.node(1).cli_ok(&["volume", "set", "gv", "auth.allow", "127.0.0.*"]);
    assert_eq!(option(pool.node(2), "gv", "auth.allow"), "127.0.0.*");

    // Two of four down: no majority. Changes are refused with a clear
    // message, from the leader's side and from a follower's.
    pool.kill(2);
    for i in [0, 1] {
        let o = pool.node(i).cli(&["volume", "set", "gv", "auth.allow", "10.*"]);
        assert!(!o.ok(), "node {i} changed the configuration without a majority");
        assert!(o.stderr.contains("no quorum"), "node {i}: {}", o.stderr);
    }
    let o = pool
        .node(0)
        .cli(&["volume", "create", "other", &pool.brick(1, "x"), "force"]);
    assert!(!o.ok() && o.stderr.contains("no quorum"), "{o:?}");
    // Reads still answer, from what each node knows.
    assert_eq!(option(pool.node(0), "gv", "auth.allow"), "127.0.0.*");

    // The two return: the pool has a majority again, the node that missed
    // a change has it, and the refused change never appears.
    pool.restart(2);
    pool.restart(3);
    let caught_up = poll(Duration::from_secs(20), || {
        (option(pool.node(3), "gv", "auth.allow") == "127.0.0.*").then_some(())
    });
    assert!(caught_up.is_some(), "node 3 did not catch up");
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..4 {
        assert_eq!(option(pool.node(i), "gv", "auth.allow"), "127.0.0.*", "node {i}");
    }
    let changed = poll(Duration::from_secs(20), || {
        pool.node(3)
            .cli(&["volume", "set", "gv", "auth.allow", "127.*"])
            .ok()
            .then_some(())
    });
    assert!(changed.is_some(), "the pool did not accept changes again");
    for i in 0..4 {
        let v = poll(Duration::from_secs(10), || {
            let v = option(pool.node(i), "gv", "auth.allow");
            (v == "127.*").then_some(v)
        });
        assert!(v.is_some(), "node {i} did not apply the change");
    }
    let info = pool.node(2).cli_ok(&["volume", "info"]);
    assert!(!info.contains("Volume Name: other"), "{info}");
}

#[test]
fn members_of_another_pool_are_refused_and_detach_frees_a_node() {
    let mut pool = Pool::new(2);
    let other = Pool::unjoined(1);
    // A member of a pool refuses a probe from another pool, also after a
    // restart from its (now stale for the prober) state dir.
    let o = other.node(0).cli(&["peer", "probe", &pool.addr(1)]);
    assert!(!o.ok() && o.stderr.contains("already part of another pool"), "{o:?}");
    pool.kill(1);
    pool.restart(1);
    let o = other.node(0).cli(&["peer", "probe", &pool.addr(1)]);
    assert!(!o.ok() && o.stderr.contains("already part of another pool"), "{o:?}");
    assert_eq!(peers_json(other.node(0)).len(), 1);

    // Detach refuses while the node holds bricks.
    let b = pool.brick(1, "b1");
    pool.node(0).cli_ok(&["volume", "create", "gv", &b, "force"]);
    let o = pool.node(0).cli(&["peer", "detach", &pool.addr(1)]);
    assert!(!o.ok() && o.stderr.contains("Brick(s) with the peer"), "{o:?}");
    // force is for a dead node only.
    let o = pool.node(0).cli(&["peer", "detach", &pool.addr(1), "force"]);
    assert!(!o.ok(), "{o:?}");
    pool.node(0).cli_ok(&["volume", "delete", "gv"]);
    pool.node(0).cli_ok(&["peer", "detach", &pool.addr(1)]);
    assert_eq!(peers_json(pool.node(0)).len(), 1);
    // The detached node is a pool of its own and can join another.
    let joined = poll(Duration::from_secs(10), || {
        other.node(0).cli(&["peer", "probe", &pool.addr(1)]).ok().then_some(())
    });
    assert!(joined.is_some(), "the detached node could not join another pool");
    assert_eq!(peers_json(other.node(0)).len(), 2);
    // And its old pool no longer reaches it with its old credentials.
    let o = pool.node(0).cli(&["peer", "probe", &pool.addr(1)]);
    assert!(!o.ok(), "{o:?}");
    assert!(Path::new(&pool.state_dir(1)).join("pool.json").exists());
}

#[test]
fn members_by_ipv6_address_and_by_host_name() {
    let dir = temp_dir("cairn-pool-addr-");
    register_dir(dir.path());
    let v4 = Daemon::start(&dir.path().join("s0"), &dir.path().join("n0.log"));
    let v6_port = std::net::UdpSocket::bind(("::1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v6 = Daemon::start_at(&dir.path().join("s1"), &dir.path().join("n1.log"), "[::1]", v6_port);
    // 127.0.0.1 is "localhost" in /etc/hosts: probe it by name.
    let named_port = free_udp_port("127.0.0.1");
    let named = Daemon::start_at(
        &dir.path().join("s2"),
        &dir.path().join("n2.log"),
        "127.0.0.1",
        named_port,
    );
    let by_name = format!("localhost:{named_port}");
    v4.cli_ok(&["peer", "probe", &v6.addr]);
    v4.cli_ok(&["peer", "probe", &by_name]);
    let list = v6.cli_ok(&["pool", "list"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("localhost"), "{list}");
    let b1 = format!("{}:{}", v6.addr, dir.path().join("b1").display());
    let b2 = format!("{by_name}:{}", dir.path().join("b2").display());
    named.cli_ok(&["volume", "create", "gv", &b1, &b2, "force"]);
    v6.cli_ok(&["volume", "start", "gv"]);
    let status = v4.status_json("gv");
    for b in status["status"][0]["bricks"].as_array().unwrap() {
        assert_eq!(b["online"], true, "{b}");
    }
    let mut m = Mount::new(&v6, "gv", &dir.path().join("mnt"), &dir.path().join("mnt.log"), "");
    for i in 0..10 {
        std::fs::write(m.p(format!("f{i}")), b"six").unwrap();
    }
    let on_b1 = std::fs::read_dir(dir.path().join("b1")).unwrap().count();
    let on_b2 = std::fs::read_dir(dir.path().join("b2")).unwrap().count();
    assert!(on_b1 > 1 && on_b2 > 1, "files did not spread: {on_b1} / {on_b2}");
    for i in 0..10 {
        assert_eq!(std::fs::read(m.p(format!("f{i}"))).unwrap(), b"six");
    }
    m.unmount();
    drop((v4, v6, named));
    unregister_dir(dir.path());
}
