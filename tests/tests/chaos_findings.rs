//! Regression tests for what the randomized fault checker (`chaos.rs`)
//! found, each reduced to the replica state it left behind, made directly
//! on the bricks' backends.

use cairn_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Three nodes, a replica 3 volume `rv` (one brick each), mounted.
fn replica_3() -> (Pool, PathBuf) {
    let mut pool = Pool::new(3);
    let bricks: Vec<String> = (0..3).map(|i| pool.brick(i, &format!("b{i}"))).collect();
    let mut args = vec!["volume", "create", "rv", "replica", "3"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    pool.node(0).cli_ok(&args);
    pool.node(0).cli_ok(&["volume", "start", "rv"]);
    let mnt = pool.mount(0, "rv", "mnt", "attribute-timeout=0,entry-timeout=0");
    (pool, mnt)
}

/// The volume's id for brick `b{i}` (its blame counters carry it).
fn brick_id(pool: &Pool, i: usize) -> String {
    fn find(v: &serde_json::Value, suffix: &str) -> Option<String> {
        match v {
            serde_json::Value::Object(m) => {
                let path = m.get("path").and_then(|p| p.as_str());
                if path.is_some_and(|p| p.ends_with(suffix)) {
                    if let Some(id) = m.get("id").and_then(|x| x.as_str()) {
                        return Some(id.replace('-', ""));
                    }
                }
                m.values().find_map(|x| find(x, suffix))
            }
            serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, suffix)),
            _ => None,
        }
    }
    let info = pool.node(0).info_json();
    find(&info, &format!("/b{i}")).unwrap_or_else(|| panic!("no id for b{i} in {info}"))
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check_libc(r as i64, &format!("setxattr {name} on {}", path.display()));
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// A counter value: data, metadata, entry (big-endian i32 each).
fn counter(data: i32, metadata: i32, entry: i32) -> Vec<u8> {
    [data, metadata, entry].iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Puts an inode in a brick's heal index, as the brick does when one of
/// its counters is not zero.
fn index(brick: &Path, of: &Path) {
    let gfid = get_xattr(of, "trusted.cairn.gfid").expect("a gfid");
    let hex: String = gfid.iter().map(|b| format!("{b:02x}")).collect();
    let dir = brick.join(".cairn/index");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), b"").unwrap();
}

fn heal_count(pool: &Pool) -> Option<u64> {
    let out = pool
        .node(0)
        .cli_ok(&["--json", "volume", "heal", "rv", "statistics", "heal-count"]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["heal_statistics"]
        .as_array()?
        .iter()
        .map(|b| b["pending"].as_u64())
        .sum()
}

#[track_caller]
fn assert_heals(pool: &Pool, what: &str) {
    pool.node(0).cli_ok(&["volume", "heal", "rv"]);
    let healed = poll(Duration::from_secs(60), || (heal_count(pool) == Some(0)).then_some(()));
    if healed.is_none() {
        let info = pool.node(0).cli(&["volume", "heal", "rv", "info"]).stdout;
        panic!("{what}: the heal index never emptied:\n{info}");
    }
}

/// Two replicas were healed from the third but kept blaming each other
/// (a heal cleared only blame between sources and sinks): the file never
/// left the heal index, and with the source away the two would have
/// looked like a split-brain.
#[test]
fn sinks_healed_from_one_source_stop_blaming_each_other() {
    let (pool, mnt) = replica_3();
    let good = pattern(1, 200 * 1024);
    write_file(&mnt.join("f"), &good);
    let (id0, id1) = (brick_id(&pool, 0), brick_id(&pool, 1));
    let copy = |i: usize| pool.brick_dir(&format!("b{i}")).join("f");
    // b0 and b1 missed a write and blame each other for it; b2 has it.
    for (i, blamed) in [(0, &id1), (1, &id0)] {
        std::fs::write(copy(i), pattern(2, 200 * 1024)).unwrap();
        set_xattr(&copy(i), &format!("trusted.cairn.afr.{blamed}"), &counter(1, 0, 0));
        index(&pool.brick_dir(&format!("b{i}")), &copy(i));
    }
    assert_heals(&pool, "two sinks blaming each other");
    for i in 0..3 {
        assert!(std::fs::read(copy(i)).unwrap() == good, "b{i} was not healed");
        for id in [&id0, &id1] {
            let c = get_xattr(&copy(i), &format!("trusted.cairn.afr.{id}"));
            assert!(
                c.as_ref().is_none_or(|c| *c == counter(0, 0, 0)),
                "b{i} still blames {id}: {c:?}"
            );
        }
    }
    assert!(read_file(&mnt.join("f")) == good);
}

/// An entry change cut short leaves `dirty` on its directory with nobody
/// blamed; no heal cleared it, so the directory stayed in the index.
#[test]
fn a_stale_entry_dirty_mark_is_settled() {
    let (pool, mnt) = replica_3();
    std::fs::create_dir(mnt.join("d")).unwrap();
    write_file(&mnt.join("d/x"), b"x");
    let b1 = pool.brick_dir("b1");
    set_xattr(&b1.join("d"), "trusted.cairn.afr.dirty", &counter(0, 0, 1));
    index(&b1, &b1.join("d"));
    assert_heals(&pool, "a stale entry dirty mark");
    assert_eq!(
        get_xattr(&b1.join("d"), "trusted.cairn.afr.dirty"),
        Some(counter(0, 0, 0))
    );
    let names: Vec<_> = std::fs::read_dir(mnt.join("d"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["x"], "the merge kept the directory's names");
    for i in 0..3 {
        assert_eq!(
            std::fs::read(pool.brick_dir(&format!("b{i}")).join("d/x")).unwrap(),
            b"x"
        );
    }
}

/// A create cut short by a SIGKILL left a file with its name and gfid but
/// no handle link on one brick: lookups found it, every request by gfid
/// failed, and no heal could ever reach that copy. The brick's lookup now
/// makes the handle again.
#[test]
fn a_file_whose_create_was_cut_short_on_a_brick_is_reachable_again() {
    let (pool, mnt) = replica_3();
    write_file(&mnt.join("f"), b"before");
    let b1 = pool.brick_dir("b1");
    let gfid = get_xattr(&b1.join("f"), "trusted.cairn.gfid").expect("a gfid");
    let hex: String = gfid.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::remove_file(b1.join(".cairn/files").join(&hex[..2]).join(&hex)).expect("the handle link");
    write_file(&mnt.join("f"), b"after, and longer");
    let everywhere = poll(Duration::from_secs(30), || {
        (0..3)
            .all(|i| {
                std::fs::read(pool.brick_dir(&format!("b{i}")).join("f"))
                    .ok()
                    .as_deref()
                    == Some(&b"after, and longer"[..])
            })
            .then_some(())
    });
    assert!(
        everywhere.is_some(),
        "brick 1 holds {:?}",
        String::from_utf8_lossy(&std::fs::read(b1.join("f")).unwrap_or_default())
    );
    assert_heals(&pool, "a file whose handle was re-made");
}

/// Three replicas failed one after the other, each missing what the two
/// others did meanwhile, so every copy of a directory blames the other two
/// (an entry split-brain). gluster's conservative merge keeps every name
/// some copy has, which brought back files whose unlink had been
/// acknowledged (the chaos checker found it). With quorum every
/// acknowledged change reached two of three: a name on one copy alone was
/// removed (or never acknowledged) and goes; while a copy is away such a
/// name is undecidable and answers EIO rather than a guess.
#[test]
fn an_entry_split_brain_keeps_what_a_majority_holds_and_nothing_removed_comes_back() {
    let mut pool = Pool::new(3);
    let bricks: Vec<String> = (0..3).map(|i| pool.brick(i, &format!("b{i}"))).collect();
    let mut args = vec!["volume", "create", "rv", "replica", "3"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    pool.node(0).cli_ok(&args);
    let heal_options = [
        "cluster.self-heal-daemon",
        "cluster.entry-self-heal",
        "cluster.data-self-heal",
        "cluster.metadata-self-heal",
    ];
    for o in heal_options {
        pool.node(0).cli_ok(&["volume", "set", "rv", o, "off"]);
    }
    pool.node(0).cli_ok(&["volume", "start", "rv"]);
    let mnt = pool.mount(0, "rv", "mnt", "attribute-timeout=0,entry-timeout=0");
    let d = mnt.join("d");
    std::fs::create_dir(&d).unwrap();
    for name in ["x", "y", "keep"] {
        write_file(&d.join(name), name.as_bytes());
    }
    // Each step runs with one node away, once the mount reaches the two
    // others again (a change reaching one of them alone is refused).
    let retry = |what: &str, f: &dyn Fn() -> std::io::Result<()>| {
        let done = poll(Duration::from_secs(30), || f().ok());
        assert!(done.is_some(), "{what}: {:?}", f());
    };
    pool.kill(2);
    retry("unlink x without b2", &|| std::fs::remove_file(d.join("x")));
    pool.restart(2);
    pool.kill(0);
    retry("create z without b0", &|| std::fs::write(d.join("z"), b"z"));
    retry("unlink y without b0", &|| std::fs::remove_file(d.join("y")));
    pool.restart(0);
    pool.kill(1);
    retry("create w without b1", &|| std::fs::write(d.join("w"), b"w"));
    pool.restart(1);
    let brick_d: Vec<PathBuf> = (0..3).map(|i| pool.brick_dir(&format!("b{i}")).join("d")).collect();
    let names = |i: usize| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&brick_d[i])
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        [names(0), names(1), names(2)],
        [vec!["keep", "w", "y"], vec!["keep", "z"], vec!["keep", "w", "x", "z"]],
        "the three copies of d each missed one step"
    );
    let errno = |name: &str| std::fs::metadata(d.join(name)).err().and_then(|e| e.raw_os_error());
    // Every copy answers: the holders decide.
    let decided = poll(Duration::from_secs(30), || {
        (errno("x") == Some(libc::ENOENT) && errno("z").is_none()).then_some(())
    });
    assert!(decided.is_some(), "x: {:?}, z: {:?}", errno("x"), errno("z"));
    for (name, want) in [
        ("x", Some(libc::ENOENT)),
        ("y", Some(libc::ENOENT)),
        ("z", None),
        ("w", None),
        ("keep", None),
    ] {
        assert_eq!(errno(name), want, "{name}");
    }
    // One copy away: a name one of the other two holds could be either.
    pool.kill(2);
    let undecided = poll(Duration::from_secs(30), || {
        (errno("y") == Some(libc::EIO)).then_some(())
    });
    assert!(undecided.is_some(), "y with b2 away: {:?}", errno("y"));
    assert_eq!(errno("z"), Some(libc::EIO), "z with b2 away");
    assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"keep", "both hold it");
    pool.restart(2);
    for o in heal_options {
        pool.node(0).cli_ok(&["volume", "set", "rv", o, "on"]);
    }
    assert_heals(&pool, "an entry split-brain of three");
    for (i, dir) in brick_d.iter().enumerate() {
        assert_eq!(names(i), ["keep", "w", "z"], "b{i} after heal");
        for name in ["w", "z", "keep"] {
            let held = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(held, name.as_bytes(), "b{i}'s {name}");
        }
    }
    let mut listed: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["keep", "w", "z"]);
}

/// A name whose copies carry different gfids while its directory's
/// changelog is clean — one replica kept a copy of a change refused
/// elsewhere — answered EIO for ever: no entry heal of the parent would
/// run, and the other copies' heal waited for it. With quorum, the gfid a
/// majority holds is the name: a lookup serves it and heals the odd copy,
/// and so does the self-heal daemon for a file its index names.
#[test]
fn a_name_with_a_minority_gfid_is_served_and_healed_from_the_majority() {
    let (pool, mnt) = replica_3();
    std::fs::create_dir(mnt.join("d")).unwrap();
    let good = pattern(3, 40 * 1024);
    write_file(&mnt.join("d/f"), &good);
    let (b0, b2) = (pool.brick_dir("b0"), pool.brick_dir("b2"));
    let gfid = get_xattr(&b0.join("d/f"), "trusted.cairn.gfid").expect("a gfid");
    // b2's copy is replaced behind the volume's back by an empty file of
    // another gfid (the brick's lookup makes its handle).
    let diverge = || {
        let hex: String = gfid.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::remove_file(b2.join(".cairn/files").join(&hex[..2]).join(&hex)).expect("the handle link");
        std::fs::remove_file(b2.join("d/f")).unwrap();
        std::fs::write(b2.join("d/f"), b"").unwrap();
        set_xattr(&b2.join("d/f"), "trusted.cairn.gfid", &[0x5a; 16]);
    };
    let healed = || {
        poll(Duration::from_secs(30), || {
            (get_xattr(&b2.join("d/f"), "trusted.cairn.gfid").as_deref() == Some(&gfid[..])
                && std::fs::read(b2.join("d/f")).ok().as_deref() == Some(&good[..]))
            .then_some(())
        })
        .is_some()
    };
    diverge();
    assert!(read_file(&mnt.join("d/f")) == good, "the majority's copy is served");
    assert!(healed(), "the lookup's heal gave b2 the majority's copy");
    assert_heals(&pool, "a name with a minority gfid, healed by a lookup");
    // Again, with nobody looking: the majority's copies blame b2 (as the
    // writes that made them would) and the daemon heals the name.
    diverge();
    let id2 = brick_id(&pool, 2);
    for i in 0..2 {
        let copy = pool.brick_dir(&format!("b{i}")).join("d/f");
        set_xattr(&copy, &format!("trusted.cairn.afr.{id2}"), &counter(1, 0, 0));
        index(&pool.brick_dir(&format!("b{i}")), &copy);
    }
    pool.node(0).cli_ok(&["volume", "heal", "rv"]);
    assert!(healed(), "the daemon gave b2 the majority's copy");
    assert_heals(&pool, "a name with a minority gfid, healed by the daemon");
}

/// What the crawls that have ended, on all bricks, set out to do and
/// could not, plus what they healed.
fn crawled_entries(pool: &Pool) -> u64 {
    let out = pool.node(0).cli_ok(&["--json", "volume", "heal", "rv", "statistics"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("heal statistics JSON");
    let bricks = v["heal_statistics"].as_array().cloned().unwrap_or_default();
    bricks
        .iter()
        .flat_map(|b| b["crawls"].as_array().cloned().unwrap_or_default())
        .filter(|c| !c["ended"].is_null())
        .map(|c| c["healed"].as_u64().unwrap_or(0) + c["failed"].as_u64().unwrap_or(0))
        .sum()
}

/// b0's and b1's copies of directory `dir` (relative to the brick; ""
/// for the root) blame b2 for an entry change, and are in the heal index.
fn b0_and_b1_blame_b2_for_entries(pool: &Pool, dir: &str) {
    let id2 = brick_id(pool, 2);
    for i in 0..2 {
        let brick = pool.brick_dir(&format!("b{i}"));
        let d = brick.join(dir);
        set_xattr(&d, &format!("trusted.cairn.afr.{id2}"), &counter(0, 0, 1));
        index(&brick, &d);
    }
}

/// The inode number of a brick's copy, if it has one.
fn ino(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The 1500 s soak read a new file with another path's contents, on every
/// brick: one replica missed the rename `f → d/g`, the heal of `d` linked
/// `d/g` there to the file that replica still held as `f` (same gfid),
/// and one file had two paths on it until the root healed — long enough
/// for writes and merges to spread the pair. The heal of a name whose
/// file the sink holds under a name the source lacks now waits for the
/// other directory's heal, then makes a fresh copy.
#[test]
fn a_rename_a_replica_missed_never_leaves_one_file_under_two_paths() {
    let (pool, mnt) = replica_3();
    std::fs::create_dir(mnt.join("d")).unwrap();
    let content = pattern(4, 3000);
    write_file(&mnt.join("f"), &content);
    let brick = |i: usize| pool.brick_dir(&format!("b{i}"));
    // b0 and b1 took the rename, b2 missed it. Only `d`'s changelog blames
    // b2 at first: the root's heal has not come round yet.
    let blame_b2 = |dir: &str| b0_and_b1_blame_b2_for_entries(&pool, dir);
    for i in 0..2 {
        std::fs::rename(brick(i).join("f"), brick(i).join("d/g")).unwrap();
    }
    let before = crawled_entries(&pool);
    blame_b2("d");
    pool.node(0).cli_ok(&["volume", "heal", "rv"]);
    let tried = poll(Duration::from_secs(30), || {
        (crawled_entries(&pool) > before).then_some(())
    });
    assert!(tried.is_some(), "no crawl looked at d");
    let (f2, g2) = (brick(2).join("f"), brick(2).join("d/g"));
    assert!(
        ino(&g2).is_none() || ino(&g2) != ino(&f2),
        "b2 holds one file as both f and d/g"
    );
    // The root's heal removes b2's stale `f`; then `d/g` is made afresh.
    blame_b2("");
    assert_heals(&pool, "a rename one replica missed");
    for i in 0..3 {
        let b = brick(i);
        assert!(ino(&b.join("f")).is_none(), "b{i} still has f");
        assert!(std::fs::read(b.join("d/g")).unwrap() == content, "b{i}'s d/g");
        let nlink = std::fs::metadata(b.join("d/g")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.nlink()
        });
        assert_eq!(nlink.unwrap(), 2, "b{i}'s d/g: its name and its gfid handle");
    }
    assert!(read_file(&mnt.join("d/g")) == content);
    assert!(std::fs::metadata(mnt.join("f")).is_err(), "f is gone");
}

/// The other side of the rule above: a hard link a replica missed is
/// healed as a link to the file it already has, not as a second copy.
#[test]
fn a_hard_link_a_replica_missed_is_healed_as_a_link() {
    let (pool, mnt) = replica_3();
    std::fs::create_dir(mnt.join("d")).unwrap();
    let content = pattern(5, 3000);
    write_file(&mnt.join("f"), &content);
    let brick = |i: usize| pool.brick_dir(&format!("b{i}"));
    for i in 0..2 {
        std::fs::hard_link(brick(i).join("f"), brick(i).join("d/h")).unwrap();
    }
    b0_and_b1_blame_b2_for_entries(&pool, "d");
    assert_heals(&pool, "a hard link one replica missed");
    for i in 0..3 {
        let b = brick(i);
        assert!(ino(&b.join("d/h")).is_some(), "b{i} lacks d/h");
        assert_eq!(ino(&b.join("d/h")), ino(&b.join("f")), "b{i}: d/h is f's file");
    }
    assert!(read_file(&mnt.join("d/h")) == content);
}

/// Soak seed 7412277449637284012 (1100 s, "Open, 2026-12-06"): `d1/f2`
/// read stale from brick 1, same size as the others, every counter zero.
/// Brick 1, frozen, missed a rename of its file X; X was open there (a
/// handle that outlived the freeze). After the thaw the entry heals
/// removed the stale name (X's handle stayed: the file was open) and made
/// X again under the source's name with the same gfid, and the brick took
/// the open file's handle for an orphan and replaced it: two inodes with
/// one gfid on brick 1. The writes through the open handle "succeeded"
/// there — no blame — but landed in the old inode, while the name, the
/// gfid, reads and heals reach the new one.
#[test]
fn a_file_open_on_a_replica_that_missed_its_rename_takes_its_writes_where_its_name_is() {
    use std::os::unix::fs::FileExt;
    let (pool, mnt) = replica_3();
    std::fs::create_dir(mnt.join("d")).unwrap();
    let before = pattern(6, 3000);
    write_file(&mnt.join("f"), &before);
    // A writer has the file open on every replica.
    let open = std::fs::OpenOptions::new().write(true).open(mnt.join("f")).unwrap();
    let brick = |i: usize| pool.brick_dir(&format!("b{i}"));
    // b0 and b1 took the rename `f → d/g`; b2 missed it, and both
    // directories' changelogs on b0 and b1 blame b2.
    for i in 0..2 {
        std::fs::rename(brick(i).join("f"), brick(i).join("d/g")).unwrap();
    }
    b0_and_b1_blame_b2_for_entries(&pool, "");
    b0_and_b1_blame_b2_for_entries(&pool, "d");
    assert_heals(&pool, "a rename one replica missed while the file was open there");
    assert!(
        std::fs::read(brick(2).join("d/g")).unwrap() == before,
        "b2's d/g after the heal"
    );
    // The writer carries on through its handle.
    let after = pattern(7, 3000);
    open.write_all_at(&after, 0).unwrap();
    open.sync_all().unwrap();
    drop(open);
    assert_heals(&pool, "after the write");
    for i in 0..3 {
        let held = std::fs::read(brick(i).join("d/g")).unwrap();
        let gfid = get_xattr(&brick(i).join("d/g"), "trusted.cairn.gfid");
        assert!(
            held == after,
            "b{i}'s d/g (gfid {gfid:?}) lacks the acknowledged write (it holds {})",
            if held == before {
                "the content before it"
            } else {
                "something else"
            }
        );
    }
}
