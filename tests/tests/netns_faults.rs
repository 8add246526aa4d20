//! Fault scenarios on a real network: every `cairnd` and every mount on a
//! host of its own (a network namespace, `cairn_tests::netns`), joined by a
//! bridge on test addresses (198.18.0.0/15). Partitions split replica sets
//! while clients write on both sides, a node is frozen past the timeouts,
//! nodes run with skewed clocks, links get delay and loss, one direction
//! of a link drops. Every scenario checks that no acknowledged write is
//! lost, that nothing hangs, and that the replicas end equal or flagged as
//! split-brain.
//!
//! Parts the kernel or the machine cannot do (netem, nftables, libfaketime)
//! print `SKIP …` with the reason and pass; nothing is skipped silently.

use cairn_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mount options: no kernel caching of names or attributes (each read
/// asks the bricks), and requests fail after 5 s instead of 60.
const MOUNT_OPTS: &str = "attribute-timeout=0,entry-timeout=0,call-timeout=5";

/// No single file operation may take longer than this, whatever the fault
/// (the QUIC idle timeout is 10 s, the call timeout 5 s).
const OP_LIMIT: Duration = Duration::from_secs(40);

/// Creates and starts `rv`, one replica set over nodes `0..n`, with
/// `options` set before the start.
fn replica_volume(pool: &NetPool, n: usize, options: &[(&str, &str)]) {
    let bricks: Vec<String> = (0..n).map(|i| pool.brick(i, &format!("b{i}"))).collect();
    let count = n.to_string();
    let mut args = vec!["volume", "create", "rv", "replica", &count];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    pool.node(0).cli_ok(&args);
    for (k, v) in options {
        pool.node(0).cli_ok(&["volume", "set", "rv", k, v]);
    }
    pool.node(0).cli_ok(&["volume", "start", "rv"]);
}

fn brick_path(pool: &NetPool, b: usize, rel: &str) -> PathBuf {
    pool.brick_dir(&format!("b{b}")).join(rel)
}

/// The effective value of a volume option, as `volume get` prints it.
fn option_value(pool: &NetPool, key: &str) -> String {
    pool.node(0).cli_ok(&["volume", "get", "rv", key])
}

/// What happened to one client operation.
#[derive(Debug, Clone)]
struct Outcome {
    what: String,
    /// The content written (for writes).
    data: Vec<u8>,
    /// `Ok` means acknowledged: written and fsynced without an error.
    result: Result<(), i32>,
    took: Duration,
}

impl Outcome {
    fn acked(&self) -> bool {
        self.result.is_ok()
    }
}

/// Replaces `path`'s content with `data` and fsyncs: acknowledged only if
/// every step succeeded.
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Runs `op` on a thread of its own; panics if it does not finish within
/// [`OP_LIMIT`] (a hang is the one outcome no fault excuses).
fn bounded<T: Send + 'static>(
    what: &str,
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> (Result<T, i32>, Duration) {
    let started = Instant::now();
    let result = with_timeout(OP_LIMIT, op).unwrap_or_else(|| panic!("{what} hung for more than {OP_LIMIT:?}"));
    (result.map_err(|e| err_no(&e)), started.elapsed())
}

/// A bounded, fsynced whole-file write of `data` to `mnt/rel`.
fn timed_write(mnt: &Path, rel: &str, data: Vec<u8>) -> Outcome {
    let path = mnt.join(rel);
    let copy = data.clone();
    let (result, took) = bounded(&format!("writing {}", path.display()), move || {
        write_synced(&path, &copy)
    });
    Outcome {
        what: format!("write {rel}"),
        data,
        result,
        took,
    }
}

fn describe(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| {
            format!(
                "{} -> {} in {:?}",
                o.what,
                match o.result {
                    Ok(()) => "acked".to_string(),
                    Err(e) => errno_name(e),
                },
                o.took
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last acknowledged content of `rel` among `outcomes` (in order).
fn last_acked<'a>(outcomes: &'a [Outcome], rel: &str) -> Option<&'a [u8]> {
    outcomes
        .iter()
        .rev()
        .find(|o| o.acked() && o.what == format!("write {rel}"))
        .map(|o| o.data.as_slice())
}

/// Waits until every brick's heal index is empty (asking node `via`).
fn wait_for_heal(pool: &NetPool, via: usize, limit: Duration) {
    let healed = poll(limit, || {
        let out = pool
            .node(via)
            .cli(&["--json", "volume", "heal", "rv", "statistics", "heal-count"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let per_brick = v["heal_statistics"].as_array()?;
        let left: Option<u64> = per_brick.iter().map(|b| b["pending"].as_u64()).sum();
        (left == Some(0)).then_some(())
    });
    if healed.is_none() {
        let info = pool.node(via).cli(&["volume", "heal", "rv", "info"]).stdout;
        let listed: Vec<&str> = info.lines().filter(|l| l.starts_with('/')).collect();
        let changelogs: String = listed
            .iter()
            .map(|rel| changelogs(pool, rel.trim_start_matches('/')))
            .collect();
        panic!("the heal index never emptied:\n{info}\n{changelogs}");
    }
}

/// Every brick's replication xattrs of `rel` (for failure reports).
fn changelogs(pool: &NetPool, rel: &str) -> String {
    let mut out = String::new();
    for b in 0.. {
        let path = brick_path(pool, b, rel);
        if !pool.brick_dir(&format!("b{b}")).exists() {
            break;
        }
        let dump = std::process::Command::new("getfattr")
            .args(["-d", "-m", "trusted.cairn", "-e", "hex"])
            .arg(&path)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(getfattr: {e})"));
        out.push_str(&format!("brick {b} {rel}:\n{dump}\n"));
    }
    out
}

/// Waits until node `n`'s brick has a mount (not a self-heal daemon) among
/// its clients again, touching `mnt` so that mount uses it.
fn wait_for_mount_on(pool: &NetPool, mnt: &Path, n: usize) {
    let back = poll(Duration::from_secs(30), || {
        let _ = std::fs::read_dir(mnt).map(|rd| rd.count());
        let v = pool.node(n).status_json("rv");
        let bricks = v["status"][0]["bricks"].as_array()?.clone();
        bricks
            .iter()
            .any(|b| {
                b["brick"]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/b{n}")))
                    && b["clients"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["identity"].as_str().is_some_and(|i| i.starts_with("client-")))
                    })
            })
            .then_some(())
    });
    assert!(
        back.is_some(),
        "the mount {} never reconnected to node {n}",
        mnt.display()
    );
}

/// Asserts the bricks `0..n` hold identical trees (content, mode, owner).
#[track_caller]
fn assert_replicas_agree(pool: &NetPool, n: usize) {
    let first = brick_tree(&pool.brick_dir("b0"));
    for b in 1..n {
        let other = brick_tree(&pool.brick_dir(&format!("b{b}")));
        if let Some(d) = tree_difference(&first, &other) {
            panic!("brick 0 and brick {b} differ: {d}");
        }
    }
}

/// Asserts no brick lists anything in split-brain.
#[track_caller]
fn assert_no_split_brain(pool: &NetPool, n: usize) {
    let info = pool.node(0).cli_ok(&["volume", "heal", "rv", "info", "split-brain"]);
    assert_eq!(info.matches("Number of entries in split-brain: 0").count(), n, "{info}");
}

/// Content that says who wrote it and when (distinct lengths too, so a
/// size-based merge would show).
fn content(who: &str, round: usize) -> Vec<u8> {
    format!("{who} round {round}\n")
        .repeat(round + 1 + who.len())
        .into_bytes()
}

// ---------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------

#[test]
fn the_harness_partitions_isolates_drops_one_way_and_heals() {
    preflight();
    watchdog();
    let mut net = Network::new(4);
    let all_pairs = |net: &Network| -> Vec<(usize, usize, bool)> {
        (0..4)
            .flat_map(|a| (0..4).filter(move |b| *b != a).map(move |b| (a, b)))
            .map(|(a, b)| (a, b, net.can_send(a, b)))
            .collect()
    };
    assert!(all_pairs(&net).iter().all(|p| p.2), "{:?}", all_pairs(&net));

    net.partition(&[&[0, 1], &[2, 3]]);
    for (a, b, reached) in all_pairs(&net) {
        assert_eq!(reached, (a < 2) == (b < 2), "{a} -> {b} during the partition");
    }
    net.heal_network();
    net.isolate(3);
    for (a, b, reached) in all_pairs(&net) {
        assert_eq!(reached, a != 3 && b != 3, "{a} -> {b} with 3 isolated");
    }
    net.heal_network();
    assert!(all_pairs(&net).iter().all(|p| p.2), "not healed");

    match net.drop_one_way(0, 1) {
        Err(why) => eprintln!("SKIP one-way drop check: {why}"),
        Ok(()) => {
            assert!(!net.can_send(0, 1), "0 -> 1 should be dropped");
            assert!(net.can_send(1, 0), "1 -> 0 should pass");
            net.heal_network();
            assert!(net.can_send(0, 1), "0 -> 1 not restored");
        }
    }
    match netem_available() {
        Err(why) => eprintln!("SKIP netem check: {why}"),
        Ok(()) => {
            net.delay_loss(2, 5, 0.0).expect("netem delay");
            assert!(net.can_send(2, 3) && net.can_send(3, 2));
            net.heal_network();
        }
    }
}

// ---------------------------------------------------------------------------
// a. Partition of a replica 3 set, quorum on
// ---------------------------------------------------------------------------

/// Clients on both sides of a partition of a replica 3 set write the same
/// file and files of their own, and both keep streaming writes into one
/// more shared file (the minority's writes in flight as the partition
/// falls, under an eager lock). Quorum (auto, the default for replica 3):
/// once the partition is in place the minority acknowledges nothing, the
/// majority everything; after the network heals and self-heal runs, every
/// replica holds every acknowledged write, the replicas agree and nothing
/// is in split-brain.
#[test]
fn a_partitioned_replica_3_takes_writes_only_on_its_majority_side() {
    let started = Instant::now();
    let mut pool = NetPool::new(3, 2);
    replica_volume(&pool, 3, &[]);
    assert!(option_value(&pool, "cluster.quorum-type").contains("auto"));
    let major = pool.mount(0, 0, "rv", "major", MOUNT_OPTS);
    let minor = pool.mount(1, 2, "rv", "minor", MOUNT_OPTS);
    write_synced(&major.join("shared"), b"before the partition").unwrap();
    write_synced(&major.join("stream"), b"").unwrap();
    assert_eq!(std::fs::read(minor.join("shared")).unwrap(), b"before the partition");
    let streams = [
        Stream::start(&major.join("stream"), 0),
        Stream::start(&minor.join("stream"), 1),
    ];
    std::thread::sleep(Duration::from_secs(1));

    // Nodes 0 and 1 with client 0; node 2 with client 1.
    let (c0, c1) = (pool.client_host(0), pool.client_host(1));
    pool.net.partition(&[&[0, 1, c0], &[2, c1]]);
    let partitioned = Instant::now();
    let side = |mnt: PathBuf, who: &'static str| {
        std::thread::spawn(move || {
            let mut done = Vec::new();
            for round in 0..3 {
                done.push(timed_write(&mnt, "shared", content(who, round)));
                done.push(timed_write(&mnt, &format!("{who}-{round}"), content(who, round)));
            }
            done
        })
    };
    let (maj, min) = (side(major.clone(), "majority"), side(minor.clone(), "minority"));
    let (maj, min) = (maj.join().unwrap(), min.join().unwrap());
    // The streams go on a while after the sides settled: the majority's
    // must flow again, the minority's must keep failing.
    let settled = partitioned + Duration::from_secs(20);
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    let [major_stream, minor_stream] = streams.map(Stream::stop);
    eprintln!("majority side:\n{}\nminority side:\n{}", describe(&maj), describe(&min));
    eprintln!(
        "streams: majority {}, minority {}",
        summary(&major_stream, partitioned),
        summary(&minor_stream, partitioned)
    );
    assert!(
        maj.iter().all(Outcome::acked),
        "the majority lost writes:\n{}",
        describe(&maj)
    );
    assert!(
        min.iter().all(|o| !o.acked()),
        "the minority acknowledged a change:\n{}",
        describe(&min)
    );
    let minority_acked_late: Vec<&Block> = minor_stream
        .iter()
        .filter(|b| b.acked && b.started > partitioned)
        .collect();
    assert!(
        minority_acked_late.is_empty(),
        "the minority acknowledged streamed writes after the partition: {minority_acked_late:?}"
    );
    let majority_refused: Vec<&Block> = major_stream
        .iter()
        .filter(|b| !b.acked && b.started > partitioned + Duration::from_secs(15))
        .collect();
    assert!(
        major_stream
            .iter()
            .any(|b| b.acked && b.started > partitioned + Duration::from_secs(15)),
        "the majority's stream never flowed again"
    );
    assert!(
        majority_refused.is_empty(),
        "the majority kept refusing streamed writes: {majority_refused:?}"
    );

    pool.net.heal_network();
    wait_for_heal(&pool, 0, Duration::from_secs(60));
    let want_shared = last_acked(&maj, "shared").expect("the majority wrote shared");
    for b in 0..3 {
        assert_eq!(
            std::fs::read(brick_path(&pool, b, "shared")).unwrap(),
            want_shared,
            "brick {b}"
        );
        for round in 0..3 {
            assert_eq!(
                std::fs::read(brick_path(&pool, b, &format!("majority-{round}"))).unwrap(),
                content("majority", round),
                "brick {b}"
            );
            assert!(
                !brick_path(&pool, b, &format!("minority-{round}")).exists(),
                "a refused create left minority-{round} on brick {b}"
            );
        }
        let copy = std::fs::read(brick_path(&pool, b, "stream")).unwrap();
        for block in major_stream.iter().chain(&minor_stream).filter(|b| b.acked) {
            assert!(
                block.is_in(&copy),
                "brick {b} lost acknowledged streamed write {block:?}"
            );
        }
    }
    assert_replicas_agree(&pool, 3);
    assert_no_split_brain(&pool, 3);
    // Both clients read the majority's data.
    for mnt in [&major, &minor] {
        let seen = poll(Duration::from_secs(20), || {
            std::fs::read(mnt.join("shared")).ok().filter(|d| d == want_shared)
        });
        assert!(seen.is_some(), "{} does not read the healed file", mnt.display());
    }
    eprintln!("scenario a took {:?}", started.elapsed());
}

/// Size of one streamed write.
const STREAM_BLOCK: usize = 4096;

/// One streamed write: block `index` of its writer (at offset
/// `(2 * index + parity) * STREAM_BLOCK`, so two writers never overlap).
#[derive(Debug, Clone)]
struct Block {
    index: usize,
    parity: usize,
    started: Instant,
    acked: bool,
}

impl Block {
    fn data(&self) -> Vec<u8> {
        pattern((self.index * 2 + self.parity) as u64 + 1, STREAM_BLOCK)
    }

    fn offset(&self) -> usize {
        (2 * self.index + self.parity) * STREAM_BLOCK
    }

    /// Does `file` hold this block's data at its offset?
    fn is_in(&self, file: &[u8]) -> bool {
        file.get(self.offset()..self.offset() + STREAM_BLOCK) == Some(&self.data()[..])
    }
}

/// A writer that keeps writing blocks into one open file (one synchronous
/// `pwrite` every 100 ms, each bounded by [`OP_LIMIT`]) until stopped; records what
/// each write answered.
struct Stream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Block>>,
}

impl Stream {
    fn start(path: &Path, parity: usize) -> Stream {
        use std::os::unix::fs::FileExt;
        use std::os::unix::fs::OpenOptionsExt;
        // O_DSYNC: a pwrite that returns is on the bricks. Without it,
        // write-behind acknowledges a write on its way and reports a
        // failure at the next write or close, as gluster does.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(path)
            .unwrap();
        let file = std::sync::Arc::new(file);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut blocks = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let mut block = Block {
                    index: blocks.len(),
                    parity,
                    started: Instant::now(),
                    acked: false,
                };
                let (f, data, at) = (file.clone(), block.data(), block.offset() as u64);
                let (result, _) = bounded("a streamed write", move || f.write_all_at(&data, at));
                block.acked = result.is_ok();
                blocks.push(block);
                std::thread::sleep(Duration::from_millis(100));
            }
            blocks
        });
        Stream { stop, thread }
    }

    fn stop(self) -> Vec<Block> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("stream writer")
    }
}

/// "N writes, A acked (B after the partition)".
fn summary(blocks: &[Block], partitioned: Instant) -> String {
    let acked = blocks.iter().filter(|b| b.acked).count();
    let late = blocks.iter().filter(|b| b.acked && b.started > partitioned).count();
    format!(
        "{} writes, {acked} acknowledged ({late} started after the partition)",
        blocks.len()
    )
}

// ---------------------------------------------------------------------------
// b. Partition of a replica 2 set, quorum off
// ---------------------------------------------------------------------------

/// The same partition with replica 2 and `cluster.quorum-type none`: both
/// sides acknowledge. After the network heals, the file both wrote is a
/// split-brain — listed, answering EIO, each brick keeping its own copy —
/// never silently merged; files each side made alone are merged.
#[test]
fn a_partitioned_replica_2_without_quorum_flags_the_divergent_file() {
    let started = Instant::now();
    let mut pool = NetPool::new(2, 2);
    replica_volume(&pool, 2, &[("cluster.quorum-type", "none")]);
    let zero = pool.mount(0, 0, "rv", "zero", MOUNT_OPTS);
    let one = pool.mount(1, 1, "rv", "one", MOUNT_OPTS);
    write_synced(&zero.join("shared"), b"before the partition").unwrap();
    assert_eq!(std::fs::read(one.join("shared")).unwrap(), b"before the partition");

    let (c0, c1) = (pool.client_host(0), pool.client_host(1));
    pool.net.partition(&[&[0, c0], &[1, c1]]);
    let side = |mnt: PathBuf, who: &'static str| {
        std::thread::spawn(move || {
            vec![
                timed_write(&mnt, "shared", content(who, 0)),
                timed_write(&mnt, &format!("only-{who}"), content(who, 1)),
            ]
        })
    };
    let (a, b) = (side(zero.clone(), "zero"), side(one.clone(), "one"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    eprintln!("side zero:\n{}\nside one:\n{}", describe(&a), describe(&b));
    assert!(
        a.iter().chain(&b).all(Outcome::acked),
        "without quorum both sides should take writes"
    );

    pool.net.heal_network();
    wait_for_mount_on(&pool, &zero, 1);
    wait_for_mount_on(&pool, &one, 0);
    for mnt in [&zero, &one] {
        let refused = poll(Duration::from_secs(30), || {
            std::fs::read(mnt.join("shared"))
                .err()
                .filter(|e| e.raw_os_error() == Some(libc::EIO))
        });
        assert!(
            refused.is_some(),
            "{} served a file both sides changed: {:?}",
            mnt.display(),
            std::fs::read(mnt.join("shared")).map(|d| String::from_utf8_lossy(&d).into_owned())
        );
    }
    // The names each side made alone are merged onto both bricks.
    let merged = poll(Duration::from_secs(40), || {
        let _ = std::fs::read_dir(&zero).map(|rd| rd.count());
        (0..2)
            .all(|b| {
                std::fs::read(brick_path(&pool, b, "only-zero")).ok() == Some(content("zero", 1))
                    && std::fs::read(brick_path(&pool, b, "only-one")).ok() == Some(content("one", 1))
            })
            .then_some(())
    });
    assert!(merged.is_some(), "the names made on each side were not merged");
    // Flagged, and still each brick's own copy after the heals ran.
    let info = pool.node(0).cli_ok(&["volume", "heal", "rv", "info", "split-brain"]);
    assert!(info.contains("/shared\n"), "{info}");
    assert!(!info.contains("only-"), "{info}");
    assert_eq!(
        std::fs::read(brick_path(&pool, 0, "shared")).unwrap(),
        content("zero", 0)
    );
    assert_eq!(
        std::fs::read(brick_path(&pool, 1, "shared")).unwrap(),
        content("one", 0)
    );
    expect_errno(
        std::fs::read(zero.join("shared")),
        libc::EIO,
        "reading the split-brain file",
    );
    assert_eq!(std::fs::read(one.join("only-zero")).unwrap(), content("zero", 1));
    eprintln!("scenario b took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// c. A node frozen past the timeouts
// ---------------------------------------------------------------------------

/// How long a frozen node stays frozen: past the QUIC idle timeout (10 s)
/// and the mounts' call timeout (5 s here).
const FREEZE: Duration = Duration::from_secs(16);

/// Writes whole files `prefix-0`, `prefix-1`… through `mnt` until `until`
/// (one every 200 ms, each bounded); returns what each answered.
fn write_files_until(mnt: &Path, prefix: &str, until: Instant) -> Vec<Outcome> {
    write_files_until_at_least(mnt, prefix, until, 1)
}

/// As [`write_files_until`], going on past `until` until there are `min`
/// writes (a first write may take most of the time a fault costs).
fn write_files_until_at_least(mnt: &Path, prefix: &str, until: Instant, min: usize) -> Vec<Outcome> {
    let mut done = Vec::new();
    while Instant::now() < until || done.len() < min {
        let k = done.len();
        done.push(timed_write(mnt, &format!("{prefix}-{k}"), content(prefix, k)));
        std::thread::sleep(Duration::from_millis(200));
    }
    done
}

/// Asserts every acknowledged write among `outcomes` is on every brick
/// `0..n` as written (each wrote a distinct file).
#[track_caller]
fn assert_acked_everywhere(pool: &NetPool, n: usize, outcomes: &[Outcome]) {
    for o in outcomes.iter().filter(|o| o.acked()) {
        let rel = o.what.trim_start_matches("write ");
        for b in 0..n {
            assert_eq!(
                std::fs::read(brick_path(pool, b, rel)).ok().as_deref(),
                Some(&o.data[..]),
                "brick {b} lacks acknowledged {rel}"
            );
        }
    }
}

/// A replica 3 node is SIGSTOPped (it keeps its connections but answers
/// nothing) for longer than every timeout while a client writes. Quorum
/// holds with the other two: every write is acknowledged, none hangs.
/// After SIGCONT the node is caught up by self-heal and the replicas agree.
#[test]
fn a_frozen_node_neither_hangs_nor_stops_writers_and_catches_up() {
    let started = Instant::now();
    let mut pool = NetPool::new(3, 1);
    replica_volume(&pool, 3, &[]);
    let mnt = pool.mount(0, 0, "rv", "mnt", MOUNT_OPTS);
    let before = write_files_until(&mnt, "before", Instant::now() + Duration::from_secs(1));
    assert!(before.iter().all(Outcome::acked), "{}", describe(&before));

    pool.freeze(2);
    let frozen = write_files_until(&mnt, "frozen", Instant::now() + FREEZE);
    pool.thaw(2);
    let slowest = frozen.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "while node 2 was frozen: {} writes, {} acknowledged, slowest {slowest:?}",
        frozen.len(),
        frozen.iter().filter(|o| o.acked()).count()
    );
    assert!(
        frozen.iter().all(Outcome::acked),
        "two of three replicas answer, yet writes failed:\n{}",
        describe(&frozen)
    );

    let after = write_files_until(&mnt, "after", Instant::now() + Duration::from_secs(1));
    assert!(after.iter().all(Outcome::acked), "{}", describe(&after));
    wait_for_heal(&pool, 0, Duration::from_secs(60));
    assert_replicas_agree(&pool, 3);
    assert_no_split_brain(&pool, 3);
    for o in [&before, &frozen, &after] {
        assert_acked_everywhere(&pool, 3, o);
    }
    eprintln!("scenario c took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// d. Clock skew
// ---------------------------------------------------------------------------

/// libfaketime's preload library, if the `faketime` package is installed.
fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain(std::iter::once(PathBuf::from("/usr/lib/faketime/libfaketime.so.1")))
        .find(|p| p.is_file())
}

/// Seconds by which the clock behind `log`'s last timestamp
/// (`YYYY-MM-DDTHH:MM:SS…`) was ahead of ours when we read it, within
/// half a day either way.
fn log_clock_offset(log: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(log).ok()?;
    let stamp = text.lines().last()?.get(11..19)?;
    let secs_of_day = |hms: &str| -> Option<i64> {
        let mut it = hms.split(':').map(|p| p.parse::<i64>().ok());
        Some(it.next()?? * 3600 + it.next()?? * 60 + it.next()??)
    };
    let logged = secs_of_day(stamp)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64
        % 86_400;
    let diff = (logged - now).rem_euclid(86_400);
    Some(if diff > 43_200 { diff - 86_400 } else { diff })
}

/// Seconds between `path`'s mtime and now.
fn age_of(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now - m.mtime()
}

/// Node 1's wall clock runs an hour ahead, node 2's an hour behind
/// (libfaketime; the monotonic clocks, which no two machines compare,
/// stay real). A mixed workload, a SIGKILL and restart of the skewed node
/// with changes meanwhile, and the heal that follows must leave equal
/// replicas. File times come from each brick's kernel or from the client
/// (utimes, heal copying the source's), never from a node's wall clock,
/// so no file time on any brick may show the skew.
#[test]
fn replicas_agree_across_nodes_with_skewed_clocks() {
    let started = Instant::now();
    let Some(lib) = libfaketime() else {
        eprintln!("SKIP clock skew: libfaketime is not installed (Debian package faketime; .ci/run installs it)");
        return;
    };
    let skew = |i: usize| match i {
        1 => Some("+1h"),
        2 => Some("-1h"),
        _ => None,
    };
    let mut pool = NetPool::with_env(3, 1, |i| {
        skew(i).map_or_else(Vec::new, |offset| {
            vec![
                ("LD_PRELOAD".to_string(), lib.display().to_string()),
                ("FAKETIME".to_string(), offset.to_string()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
            ]
        })
    });
    replica_volume(&pool, 3, &[]);
    // The skew is real: each daemon's log stamps come from its own clock.
    for (i, want) in [(0, 0), (1, 3600), (2, -3600)] {
        let offset = log_clock_offset(&pool.log(i)).expect("a timestamped log line");
        assert!(
            (offset - want).abs() < 120,
            "node {i}'s clock is off by {offset} s, not {want} s"
        );
    }
    let mnt = pool.mount(0, 0, "rv", "mnt", MOUNT_OPTS);
    let set_time = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    mixed_workload(&mnt, "one", set_time);
    pool.kill(1);
    mixed_workload(&mnt, "two", set_time);
    pool.restart(1);
    mixed_workload(&mnt, "three", set_time);
    wait_for_heal(&pool, 0, Duration::from_secs(60));
    assert_replicas_agree(&pool, 3);
    assert_no_split_brain(&pool, 3);
    for b in 0..3 {
        let dir = pool.brick_dir(&format!("b{b}"));
        for round in ["one", "two", "three"] {
            let stamped = dir.join(format!("{round}/stamped"));
            let m = std::fs::metadata(&stamped).unwrap().modified().unwrap();
            assert_eq!(
                m,
                set_time,
                "brick {b}: {} lost its client-set mtime",
                stamped.display()
            );
            for rel in [format!("{round}/renamed"), format!("{round}/appended")] {
                let age = age_of(&dir.join(&rel));
                assert!(
                    (-5..600).contains(&age),
                    "brick {b}: {rel} is stamped {age} s in the past: a skewed clock leaked into a file time"
                );
            }
        }
    }
    eprintln!("scenario d took {:?}", started.elapsed());
}

/// Creates `round/` with files, a rename, a chmod, an append, a symlink,
/// an unlink and a client-set mtime, each checked through the mount.
fn mixed_workload(mnt: &Path, round: &str, set_time: std::time::SystemTime) {
    use std::os::unix::fs::PermissionsExt;
    let dir = mnt.join(round);
    std::fs::create_dir(&dir).unwrap();
    for k in 0..4 {
        write_synced(&dir.join(format!("f{k}")), &content(round, k)).unwrap();
    }
    std::fs::rename(dir.join("f0"), dir.join("renamed")).unwrap();
    std::fs::set_permissions(dir.join("f1"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(dir.join("f2")).unwrap();
    std::os::unix::fs::symlink("renamed", dir.join("link")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("appended"))
        .unwrap();
    f.write_all(b"appended\n").unwrap();
    f.sync_all().unwrap();
    let stamped = std::fs::File::create(dir.join("stamped")).unwrap();
    stamped.set_modified(set_time).unwrap();
    drop(stamped);
    assert_eq!(std::fs::read(dir.join("renamed")).unwrap(), content(round, 0));
    assert_eq!(std::fs::read(dir.join("link")).unwrap(), content(round, 0));
    assert_eq!(
        std::fs::metadata(dir.join("stamped")).unwrap().modified().unwrap(),
        set_time
    );
}

// ---------------------------------------------------------------------------
// e. Delay and loss
// ---------------------------------------------------------------------------

/// A client behind a 20 ms (each way), 1 % loss link (netem; where the
/// kernel lacks netem, 1 % loss from nftables and no delay, said so)
/// completes a small workload, and the bricks hold exactly its result.
#[test]
fn a_mount_over_a_slow_lossy_link_completes_a_workload() {
    let started = Instant::now();
    let mut pool = NetPool::new(2, 1);
    replica_volume(&pool, 2, &[]);
    let mnt = pool.mount(0, 0, "rv", "mnt", MOUNT_OPTS);
    let client = pool.client_host(0);
    match pool.net.delay_loss(client, 20, 1.0) {
        Ok(()) => eprintln!("client link: netem delay 20 ms each way, 1 % loss"),
        Err(why) => {
            eprintln!("SKIP the 20 ms delay: {why}");
            match pool.net.loss_nft(client, 1) {
                Ok(()) => eprintln!("client link: 1 % loss each way from nftables, no delay"),
                Err(why) => {
                    eprintln!("SKIP the lossy link too: {why}");
                    return;
                }
            }
        }
    }
    let mut model = std::collections::BTreeMap::new();
    std::fs::create_dir(mnt.join("w")).unwrap();
    for k in 0..16 {
        let data = pattern(k as u64 + 7, 8192 << (k % 6));
        let o = timed_write(&mnt, &format!("w/f{k}"), data.clone());
        assert!(o.acked(), "{}", describe(&[o]));
        model.insert(format!("f{k}"), data);
    }
    for k in 0..4 {
        std::fs::rename(mnt.join(format!("w/f{k}")), mnt.join(format!("w/r{k}"))).unwrap();
        let data = model.remove(&format!("f{k}")).unwrap();
        model.insert(format!("r{k}"), data);
        std::fs::remove_file(mnt.join(format!("w/f{}", k + 4))).unwrap();
        model.remove(&format!("f{}", k + 4));
    }
    let mut listed: Vec<String> = std::fs::read_dir(mnt.join("w"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
    for (name, data) in &model {
        assert!(read_file(&mnt.join("w").join(name)) == *data, "{name} reads back wrong");
        for b in 0..2 {
            assert!(
                std::fs::read(brick_path(&pool, b, &format!("w/{name}"))).ok().as_ref() == Some(data),
                "brick {b}: w/{name}"
            );
        }
    }
    pool.net.heal_network();
    assert_replicas_agree(&pool, 2);
    eprintln!("scenario e took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// f. One-way loss
// ---------------------------------------------------------------------------

/// Half-broken links, where one direction drops and the other delivers:
/// first the client's packets to node 2 are lost, then node 1's packets
/// to the client. Replica 3 keeps quorum: every write is acknowledged in
/// bounded time; after each heal the replicas agree.
#[test]
fn one_way_loss_between_a_client_and_a_node_neither_hangs_nor_loses_writes() {
    let started = Instant::now();
    let mut pool = NetPool::new(3, 1);
    replica_volume(&pool, 3, &[]);
    let mnt = pool.mount(0, 0, "rv", "mnt", MOUNT_OPTS);
    let client = pool.client_host(0);
    let mut all = Vec::new();
    for (phase, (from, to, node)) in [(client, 2, 2), (1, client, 1)].into_iter().enumerate() {
        if let Err(why) = pool.net.drop_one_way(from, to) {
            eprintln!("SKIP one-way loss: {why}");
            return;
        }
        let prefix = format!("phase{phase}");
        // Long enough for the half-dead connection to be given up (the
        // node's own idle timeout, 10 s, ends it) and writes to go on
        // without that node.
        let outcomes = write_files_until_at_least(&mnt, &prefix, Instant::now() + Duration::from_secs(24), 10);
        eprintln!(
            "host {from} -> host {to} dropped: {} writes, slowest {:?}",
            outcomes.len(),
            outcomes.iter().map(|o| o.took).max().unwrap_or_default()
        );
        assert!(
            outcomes.iter().all(Outcome::acked),
            "two of three replicas answer, yet writes failed:\n{}",
            describe(&outcomes)
        );
        pool.net.heal_network();
        wait_for_heal(&pool, 0, Duration::from_secs(60));
        assert_replicas_agree(&pool, 3);
        // One fault at a time: the next phase cuts another node, so the
        // mount must be back on this one first (its re-dial runs every
        // second; a phase starting inside that second is a double fault,
        // and with one of three replicas ENOTCONN is the right answer).
        wait_for_mount_on(&pool, &mnt, node);
        all.extend(outcomes);
    }
    assert_no_split_brain(&pool, 3);
    assert_acked_everywhere(&pool, 3, &all);
    eprintln!("scenario f took {:?}", started.elapsed());
}
