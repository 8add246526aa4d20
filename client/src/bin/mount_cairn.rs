//! `mount.cairn NODE:/VOLUME MOUNTPOINT [-o options]`: mounts a Cairn volume.
//! Installed as /sbin/mount.cairn so that `mount -t cairn` and fstab work.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cairn_client::mount::MountOptions::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mount.cairn: {e:#}");
            std::process::exit(1);
        }
    };
    let result = if opts.foreground {
        let log = cairn_client::mount::init_logging(&opts);
        cairn_client::mount::run_foreground(opts, log)
    } else {
        cairn_client::mount::mount_in_background(&opts, &args)
    };
    if let Err(e) = result {
        eprintln!("mount.cairn: {e:#}");
        std::process::exit(1);
    }
}
