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
    let level = opts.log_level.clone().unwrap_or_else(|| "info".into());
    let result = if opts.foreground {
        cairn_common::logging::init(&level);
        cairn_client::mount::run_foreground(opts)
    } else {
        cairn_client::mount::mount_in_background(&opts, &args)
    };
    if let Err(e) = result {
        eprintln!("mount.cairn: {e:#}");
        std::process::exit(1);
    }
}
