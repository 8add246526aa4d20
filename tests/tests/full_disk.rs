//! A brick whose disk fills up: ENOSPC reaches the application, what was
//! acknowledged before stays intact, and space freed is usable again.

use cairn_tests::*;
use std::io::Write;

#[test]
fn enospc_surfaces_and_acknowledged_data_survives() {
    preflight();
    watchdog();
    let tmp = temp_dir("cairn-full-");
    let fs_dir = tmp.path().join("fs");
    let _fs = Tmpfs::mount(&fs_dir, 8);

    let daemon = Daemon::start(&tmp.path().join("state"), &tmp.path().join("cairnd.log"));
    daemon.create_started_volume("vol", &fs_dir.join("brick"));
    let mut m = Mount::new(&daemon, "vol", &tmp.path().join("mnt"), &tmp.path().join("mnt.log"), "");

    let keep = vec![0x42u8; 1 << 20];
    std::fs::write(m.p("kept"), &keep).unwrap();
    // Fill the rest: some write (or the final flush) must fail with ENOSPC.
    let mut f = std::fs::File::create(m.p("filler")).unwrap();
    let chunk = vec![0x17u8; 256 << 10];
    let mut written = 0usize;
    let err = loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written < (64 << 20), "wrote {written} bytes to an 8 MiB file system");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    // Nothing acknowledged before is damaged; the filler holds what was
    // acknowledged of it.
    assert_eq!(std::fs::read(m.p("kept")).unwrap(), keep);
    let filler = std::fs::read(m.p("filler")).unwrap();
    assert!(
        filler.len() >= written,
        "acknowledged {written} bytes, {} are there",
        filler.len()
    );
    assert!(filler.iter().all(|&b| b == 0x17));
    // New files fail too, with ENOSPC, not another error.
    let more = std::fs::write(m.p("more"), vec![1u8; 2 << 20]);
    assert_eq!(more.err().and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
    // Freeing space makes the volume writable again.
    std::fs::remove_file(m.p("filler")).unwrap();
    std::fs::write(m.p("after"), vec![2u8; 1 << 20]).unwrap();
    assert_eq!(std::fs::read(m.p("after")).unwrap().len(), 1 << 20);
    m.unmount();
}
