//! Mounting like any other file system: `mount -t cairn` through the helper
//! installed as /sbin/mount.cairn, and an fstab line mounted with `mount -a`.

use cairn_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Installs the built mount helper as /sbin/mount.cairn for the test's
/// duration (removed again unless something else was there before).
struct HelperInstalled {
    path: PathBuf,
    ours: bool,
}

impl HelperInstalled {
    fn new() -> HelperInstalled {
        let path = PathBuf::from("/sbin/mount.cairn");
        let ours = std::fs::symlink_metadata(&path).is_err();
        if ours {
            std::os::unix::fs::symlink(bin("mount-cairn"), &path).expect("installing /sbin/mount.cairn");
        }
        HelperInstalled { path, ours }
    }
}

impl Drop for HelperInstalled {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn mount_cmd(args: &[&str]) -> CliOutput {
    let mut cmd = Command::new("mount");
    cmd.args(args);
    let out = with_timeout(std::time::Duration::from_secs(60), move || cmd.output())
        .expect("mount did not return within 60 s")
        .expect("running mount");
    CliOutput::from(out)
}

fn write_and_read_back(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), name).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), name);
}

#[test]
fn mount_t_cairn_and_fstab_lines_work() {
    let c = Cluster::unmounted();
    let _helper = HelperInstalled::new();
    let opts = format!(
        "state-dir={},log-file={}",
        c.daemon.state_dir.display(),
        c.dir.join("m.log").display()
    );
    let source = format!("{}:/{}", c.daemon.addr, c.volume);

    // mount -t cairn: mount(8) runs /sbin/mount.cairn SOURCE DIR -o OPTS.
    let dir = c.dir.join("by-type");
    std::fs::create_dir_all(&dir).unwrap();
    register_mount(&dir);
    let out = mount_cmd(&["-t", "cairn", &source, dir.to_str().unwrap(), "-o", &opts]);
    assert!(out.ok(), "mount -t cairn failed: {out:?}");
    assert!(is_cairn_mount(&dir), "not a fuse.cairn mount: {:?}", mounts_entry(&dir));
    write_and_read_back(&dir, "by-type");
    let out = Command::new("umount").arg(&dir).output().unwrap();
    assert!(out.status.success(), "umount: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!is_cairn_mount(&dir));

    // An fstab line, mounted with mount -a (an alternative fstab via -T, so
    // the machine's own /etc/fstab is left alone).
    let dir = c.dir.join("by-fstab");
    std::fs::create_dir_all(&dir).unwrap();
    register_mount(&dir);
    let fstab = c.dir.join("fstab");
    std::fs::write(
        &fstab,
        format!("{source} {} cairn {opts},_netdev,defaults 0 0\n", dir.display()),
    )
    .unwrap();
    let out = mount_cmd(&["-T", fstab.to_str().unwrap(), "-a", "-t", "cairn"]);
    assert!(out.ok(), "mount -a failed: {out:?}");
    assert!(is_cairn_mount(&dir), "fstab line not mounted: {:?}", mounts_entry(&dir));
    assert!(
        Path::new(&dir).join("by-type").exists(),
        "the fstab mount shows another volume"
    );
    write_and_read_back(&dir, "by-fstab");
    lazy_unmount(&dir);

    // A volume that does not exist: mount fails with the reason.
    let dir = c.dir.join("missing");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = format!("{}:/nosuchvol", c.daemon.addr);
    let out = mount_cmd(&["-t", "cairn", &bad, dir.to_str().unwrap(), "-o", &opts]);
    assert!(!out.ok(), "mounting a missing volume succeeded");
    assert!(out.stderr.contains("nosuchvol"), "the reason is missing: {out:?}");
    assert!(!is_cairn_mount(&dir));
}
