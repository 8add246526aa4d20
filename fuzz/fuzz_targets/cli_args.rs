//! Arbitrary argument vectors for the `cairn` CLI: clap's parse, then the
//! CLI's own parsing of volume commands into requests (replica counts,
//! brick addresses, heal / top / rebalance / remove-brick words, option
//! values) must answer Ok or an error, never panic. Nothing is sent: no
//! node is contacted.
#![no_main]

// The CLI is a binary crate: its sources are compiled in.
#[allow(dead_code, unused_imports)]
#[path = "../../tools/src/main.rs"]
mod cairn_cli;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

/// Words the parser knows, so the fuzzer reaches deep subcommands quickly.
const WORDS: &[&str] = &[
    "volume",
    "create",
    "start",
    "stop",
    "delete",
    "info",
    "status",
    "set",
    "get",
    "reset",
    "profile",
    "heal",
    "add-brick",
    "remove-brick",
    "replace-brick",
    "rebalance",
    "top",
    "peer",
    "probe",
    "detach",
    "pool",
    "list",
    "client-cert",
    "issue",
    "revoke",
    "replica",
    "arbiter",
    "force",
    "commit",
    "fix-layout",
    "full",
    "split-brain",
    "summary",
    "statistics",
    "heal-count",
    "bigger-file",
    "latest-mtime",
    "source-brick",
    "--watch",
    "--json",
    "--node",
    "--state-dir",
    "detail",
    "clients",
    "mem",
    "all",
    "brick",
    "list-cnt",
    "bs",
    "count",
    "open",
    "read-perf",
    "vol",
    "0",
    "1",
    "2",
    "3",
    "9",
    "-1",
    "4294967296",
    "h:/b",
    "127.0.0.1:/b",
    "[::1]:24007:/b",
    "h:relative",
    ":/",
    "auth.allow",
    "server.root-squash",
    "server.anonuid",
    "cluster.min-free-disk",
    "on",
    "101%",
    "--help",
    "--version",
    "",
];

fuzz_target!(|data: &[u8]| {
    // Each byte below 0x80 picks a known word; a run of bytes from 0x80 on
    // is a word of its own (lossy UTF-8), split at 0xff.
    let mut args = vec!["cairn".to_string()];
    let mut i = 0;
    while i < data.len() && args.len() < 24 {
        if data[i] < 0x80 {
            args.push(WORDS[data[i] as usize % WORDS.len()].to_string());
            i += 1;
        } else {
            let end = data[i..].iter().position(|&b| b == 0xff).map_or(data.len(), |p| i + p);
            args.push(String::from_utf8_lossy(&data[i..end]).into_owned());
            i = end + 1;
        }
    }
    let Ok(cli) = cairn_cli::Cli::try_parse_from(&args) else {
        return;
    };
    if let cairn_cli::Command::Volume { action } = cli.command {
        let _ = cairn_cli::request_for(action);
    }
});
