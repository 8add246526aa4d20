//! The typed registry of volume options (`cairn volume set/get/reset`).
//! Only options that really take effect are registered; anything else is
//! refused with the list of valid keys.

/// What values an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// on/off (also accepts yes/no, true/false, enable/disable, 1/0).
    Bool,
    /// A percentage 0–100, written with or without `%`.
    Percent,
    /// Comma-separated client address patterns (`*` matches any run of
    /// characters, as in gluster's auth.allow): `192.0.2.*,10.1.*.7`.
    AddressList,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A whole number in a range.
    Count { min: u64, max: u64 },
    /// A size in bytes in a range, written as gluster does: `1MB`, `512KB`
    /// (powers of 1024; `B`, `K`, `M`, `G` and the `B`-less forms too).
    Size { min: u64, max: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct OptionDef {
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub description: &'static str,
}

pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        key: "cluster.quorum-type",
        kind: Kind::Choice(&["auto", "fixed", "none"]),
        // Empty: by replica count, as gluster (none for replica 2, auto
        // from replica 3 and with an arbiter).
        default: "",
        description: "Client quorum of a replica set: auto (more than half up, or exactly half with the first brick), fixed (cluster.quorum-count up) or none. Without it, changes fail with EROFS.",
    },
    OptionDef {
        key: "cluster.quorum-count",
        kind: Kind::Count { min: 1, max: 8 },
        default: "1",
        description: "Bricks of a replica set that must be up for changes when cluster.quorum-type is fixed.",
    },
    OptionDef {
        key: "cluster.eager-lock",
        kind: Kind::Bool,
        default: "on",
        description: "Keep a replicated file's lock and changelog mark across one client's writes, releasing them when the file goes quiet (100 ms), at flush/fsync/close, or after 1 s for other writers.",
    },
    OptionDef {
        key: "performance.write-behind",
        kind: Kind::Bool,
        // Off until the restart stall seen with it on is understood (see
        // docs/architecture.md, write-behind).
        default: "off",
        description: "Acknowledge a write once it is on its way to the bricks, keeping up to performance.write-behind-window-size per file in flight; a write that then fails is reported by the next write, fsync or close of that file (as gluster's write-behind). Files opened with O_SYNC, O_DSYNC or O_DIRECT always write through.",
    },
    OptionDef {
        key: "performance.write-behind-window-size",
        kind: Kind::Size { min: 64 << 10, max: 1 << 30 },
        default: "4MB",
        description: "Bytes of acknowledged writes per file that may still be on their way to the bricks.",
    },
    OptionDef {
        key: "cluster.favorite-child-policy",
        kind: Kind::Choice(&["none", "size", "mtime", "ctime", "majority"]),
        default: "none",
        description: "Settle a file split-brain on access by keeping the biggest copy (size), the latest modified (mtime) or changed (ctime), or one that more than half the replicas share (majority); none leaves it to the administrator (EIO until then).",
    },
    OptionDef {
        key: "cluster.split-brain-backup",
        kind: Kind::Bool,
        default: "on",
        description: "Before a split-brain resolution overwrites a losing copy, keep it beside the file as NAME.split-brain.<brick>.<time>.",
    },
    OptionDef {
        key: "cluster.data-self-heal",
        kind: Kind::Bool,
        default: "on",
        description: "Heal a file's data on access when a replica is behind a clear source.",
    },
    OptionDef {
        key: "cluster.metadata-self-heal",
        kind: Kind::Bool,
        default: "on",
        description: "Heal mode, owner, times and xattrs on access when a replica is behind.",
    },
    OptionDef {
        key: "cluster.entry-self-heal",
        kind: Kind::Bool,
        default: "on",
        description: "Heal a directory's entries on access when a replica is behind.",
    },
    OptionDef {
        key: "cluster.self-heal-daemon",
        kind: Kind::Bool,
        default: "on",
        description: "Run the self-heal daemon on every node with bricks of the volume: it heals what a returning brick missed at once, on `volume heal`, and every cluster.heal-timeout seconds.",
    },
    OptionDef {
        key: "cluster.heal-timeout",
        kind: Kind::Count { min: 5, max: 86_400 },
        default: "600",
        description: "Seconds between the self-heal daemon's periodic sweeps of the heal index (it also heals as soon as a brick reconnects).",
    },
    OptionDef {
        key: "cluster.shd-max-threads",
        kind: Kind::Count { min: 1, max: 64 },
        default: "4",
        description: "Entries the self-heal daemon heals at once on each brick.",
    },
    OptionDef {
        key: "cluster.data-self-heal-algorithm",
        kind: Kind::Choice(&["diff", "full"]),
        default: "diff",
        description: "How file data heals: diff compares checksums of 128 KiB blocks and copies only those that differ; full copies every block. Both keep holes as holes.",
    },
    OptionDef {
        key: "cluster.weighted-rebalance",
        kind: Kind::Bool,
        default: "on",
        description: "Size new directory layouts in proportion to each subvolume's capacity (off: equal shares).",
    },
    OptionDef {
        key: "cluster.min-free-disk",
        kind: Kind::Percent,
        default: "10%",
        description: "A subvolume with less free space than this takes no new files; they go elsewhere with a link file.",
    },
    OptionDef {
        key: "cluster.rebal-throttle",
        kind: Kind::Choice(&["lazy", "normal", "aggressive"]),
        default: "normal",
        description: "Files each node's rebalance worker moves at once: lazy 1, normal 4, aggressive 8.",
    },
    OptionDef {
        key: "cluster.lookup-optimize",
        kind: Kind::Bool,
        default: "on",
        description: "Trust an up-to-date directory layout for misses (one subvolume per negative lookup); off asks every subvolume.",
    },
    OptionDef {
        key: "diagnostics.latency-measurement",
        kind: Kind::Bool,
        default: "off",
        description: "Per-fop latency figures for `volume profile` (turned on by `profile start`).",
    },
    OptionDef {
        key: "diagnostics.count-fop-hits",
        kind: Kind::Bool,
        default: "off",
        description: "Per-fop call counts for `volume profile` (turned on by `profile start`).",
    },
    OptionDef {
        key: "auth.allow",
        kind: Kind::AddressList,
        default: "*",
        description: "Client addresses allowed to use the volume (patterns with *).",
    },
    OptionDef {
        key: "auth.reject",
        kind: Kind::AddressList,
        default: "",
        description: "Client addresses refused, even if auth.allow matches them.",
    },
    OptionDef {
        key: "server.root-squash",
        kind: Kind::Bool,
        default: "off",
        description: "Treat uid 0 and gid 0 of mounts' requests as server.anonuid / server.anongid: root on a client gets no more rights than the anonymous user. Internal traffic (self-heal, rebalance, a mount's background heals) is never squashed.",
    },
    OptionDef {
        key: "server.anonuid",
        kind: Kind::Count { min: 0, max: 4_294_967_294 },
        default: "65534",
        description: "The uid a squashed root becomes (server.root-squash).",
    },
    OptionDef {
        key: "server.anongid",
        kind: Kind::Count { min: 0, max: 4_294_967_294 },
        default: "65534",
        description: "The gid a squashed root group becomes (server.root-squash).",
    },
];

pub fn find(key: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|o| o.key == key)
}

/// Checks `value` for `key`; returns the canonical spelling to store.
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let def = find(key).ok_or_else(|| {
        let keys: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
        format!("option {key} does not exist; valid options: {}", keys.join(", "))
    })?;
    match def.kind {
        Kind::Bool => parse_bool(value)
            .map(|b| if b { "on" } else { "off" }.to_string())
            .ok_or_else(|| format!("option {key}: {value:?} is not a boolean (use on or off)")),
        Kind::Percent => parse_percent(value)
            .map(|p| format!("{p}%"))
            .ok_or_else(|| format!("option {key}: {value:?} is not a percentage (use 0-100, e.g. 10%)")),
        Kind::AddressList => {
            let patterns: Vec<&str> = value.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            let valid = !patterns.is_empty()
                && patterns
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_hexdigit() || ".:*".contains(c)));
            if valid {
                Ok(patterns.join(","))
            } else {
                Err(format!(
                    "option {key}: {value:?} is not a list of addresses (e.g. 192.0.2.*,127.0.0.1)"
                ))
            }
        }
        Kind::Choice(words) => words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(value.trim()))
            .map(|w| w.to_string())
            .ok_or_else(|| format!("option {key}: {value:?} is not one of {}", words.join(", "))),
        Kind::Count { min, max } => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(|n| n.to_string())
            .ok_or_else(|| format!("option {key}: {value:?} is not a number from {min} to {max}")),
        Kind::Size { min, max } => parse_size(value)
            .filter(|n| (min..=max).contains(n))
            .map(size_text)
            .ok_or_else(|| {
                format!(
                    "option {key}: {value:?} is not a size from {}KB to {}MB (e.g. 1MB, 512KB)",
                    min >> 10,
                    max >> 20
                )
            }),
    }
}

/// A size in the largest unit that divides it: 4MB, 512KB, 1000B.
pub fn size_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KB", n >> 10),
        n => format!("{n}B"),
    }
}

/// Bytes in a size written as `4MB`, `512KB`, `1G` or `65536` (powers of 1024).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_uppercase();
    let v = v.strip_suffix('B').unwrap_or(&v);
    let (digits, shift) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 10),
        'M' => (&v[..v.len() - 1], 20),
        'G' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Does `addr` match any pattern of a comma-separated list (`*` wildcards)?
pub fn address_matches(list: &str, addr: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| wildcard(p.as_bytes(), addr.as_bytes()))
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| wildcard(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && wildcard(rest, &text[1..]),
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "enable" | "1" => Some(true),
        "off" | "no" | "false" | "disable" | "0" => Some(false),
        _ => None,
    }
}

pub fn parse_percent(v: &str) -> Option<u64> {
    v.strip_suffix('%')
        .unwrap_or(v)
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|p| *p <= 100)
}

/// The effective value of `key` given a volume's reconfigured options.
pub fn effective<'a>(options: &'a std::collections::BTreeMap<String, String>, key: &str) -> &'a str {
    options
        .get(key)
        .map(String::as_str)
        .or_else(|| find(key).map(|d| d.default))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_canonicalized() {
        assert_eq!(validate("cluster.weighted-rebalance", "OFF").unwrap(), "off");
        assert_eq!(validate("cluster.weighted-rebalance", "enable").unwrap(), "on");
        assert!(validate("cluster.weighted-rebalance", "maybe").is_err());
        assert_eq!(validate("cluster.min-free-disk", "15").unwrap(), "15%");
        assert_eq!(validate("cluster.min-free-disk", "5%").unwrap(), "5%");
        assert!(validate("cluster.min-free-disk", "101%").is_err());
        let wb = "performance.write-behind-window-size";
        assert_eq!(validate(wb, "1mb").unwrap(), "1MB");
        assert_eq!(validate(wb, "512K").unwrap(), "512KB");
        assert_eq!(validate(wb, "2097152").unwrap(), "2MB");
        assert!(validate(wb, "1KB").is_err(), "below the minimum");
        assert!(validate(wb, "4XB").is_err());
        assert!(validate(wb, "99999999999999999999G").is_err());
        let e = validate("cluster.nope", "1").unwrap_err();
        assert!(e.contains("cluster.min-free-disk"), "{e}");
    }

    #[test]
    fn defaults_are_valid() {
        for o in OPTIONS.iter().filter(|o| !o.default.is_empty()) {
            assert_eq!(validate(o.key, o.default).unwrap(), o.default, "{}", o.key);
        }
    }

    #[test]
    fn address_patterns() {
        assert!(address_matches("*", "192.0.2.7"));
        assert!(address_matches("10.0.0.1, 192.0.2.*", "192.0.2.7"));
        assert!(!address_matches("192.0.2.*", "192.0.3.7"));
        assert!(!address_matches("", "127.0.0.1"));
        assert!(address_matches("::1", "::1"));
        assert_eq!(validate("auth.allow", "127.0.0.*, ::1").unwrap(), "127.0.0.*,::1");
        assert!(validate("auth.allow", "host name").is_err());
        assert!(validate("auth.reject", "").is_err());
    }

    #[test]
    fn squash_ids_are_checked() {
        assert_eq!(validate("server.root-squash", "yes").unwrap(), "on");
        assert_eq!(validate("server.anonuid", " 1000 ").unwrap(), "1000");
        // (uid_t)-1 means "leave alone" to chown: never a squash target.
        assert!(validate("server.anonuid", "4294967295").is_err());
        assert!(validate("server.anongid", "-1").is_err());
        assert!(validate("server.anongid", "nobody").is_err());
    }
}
