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
        // The options administrators put in fstab (gluster's names).
        format!(
            "{source} {} cairn {opts},_netdev,defaults,acl,log-level=debug,backup-volfile-servers={}:{} 0 0\n",
            dir.display(),
            unique_host(),
            c.daemon.port
        ),
    )
    .unwrap();
    let out = mount_cmd(&["-T", fstab.to_str().unwrap(), "-a", "-t", "cairn"]);
    assert!(out.ok(), "mount -a failed: {out:?}");
    assert!(is_cairn_mount(&dir), "fstab line not mounted: {:?}", mounts_entry(&dir));
    let log = std::fs::read_to_string(c.dir.join("m.log")).unwrap();
    assert!(
        log.contains("DEBUG"),
        "log-level=debug from fstab had no effect:\n{log}"
    );
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

/// A POSIX access ACL in its xattr form: `entries` as (tag, perm, id).
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn the_acl_option_makes_the_kernel_enforce_posix_acls() {
    const NOBODY: u32 = 65534;
    const ANY: u32 = u32::MAX;
    let c = Cluster::unmounted();
    let plain = c.new_mount("plain", "");
    let with_acl = c.new_mount("with-acl", "acl");
    let file = plain.p("secret");
    std::fs::write(&file, b"for nobody's eyes\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // user::rw- user:nobody:r-- group::--- mask::r-- other::---
    let acl = acl_xattr(&[
        (0x01, 6, ANY),
        (0x02, 4, NOBODY),
        (0x04, 0, ANY),
        (0x10, 4, ANY),
        (0x20, 0, ANY),
    ]);
    let rc = unsafe {
        libc::setxattr(
            c_path(&file).as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    check_libc(rc as i64, "setxattr system.posix_acl_access");

    let cat = |m: &Mount| {
        run_as(
            NOBODY,
            NOBODY,
            Path::new("/bin/cat"),
            &[m.p("secret").to_str().unwrap()],
        )
    };
    let out = cat(&with_acl);
    assert!(
        out.status.success() && out.stdout == b"for nobody's eyes\n",
        "the ACL's named user is refused with -o acl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the option only the mode bits count (gluster's behaviour).
    let out = cat(&plain);
    assert!(!out.status.success(), "mode 0600 let nobody read without -o acl");
    let write = run_as(
        NOBODY,
        NOBODY,
        Path::new("/bin/sh"),
        &["-c", &format!("echo x >> {}", with_acl.p("secret").display())],
    );
    assert!(!write.status.success(), "the ACL grants no write");
    // chmod keeps the ACL in step: the mask goes, and with it nobody's read.
    std::fs::set_permissions(
        with_acl.p("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = cat(&with_acl);
    assert!(!out.status.success(), "chmod 600 left the ACL's read in force");
}
