//! iozone in throughput mode, the way GlusterFS users usually quote it:
//! `iozone -i 0 -i 1 -i 2 -r 64k -s SIZE -t 2 -F FILE1 FILE2` (write and
//! rewrite, read and reread, random read and write, two processes), and the
//! parsing of its "Children see throughput" lines.

use super::report::IozoneResult;
use std::path::{Path, PathBuf};

/// Arguments for two processes writing `size` bytes each into `files`.
pub fn args(size: u64, files: &[PathBuf; 2]) -> Vec<String> {
    let mut a: Vec<String> = ["-i", "0", "-i", "1", "-i", "2", "-r", "64k", "-s"]
        .map(String::from)
        .to_vec();
    // iozone takes sizes in KiB with a `k` suffix; it needs at least a record.
    a.push(format!("{}k", (size / 1024).max(64)));
    a.extend(["-t", "2", "-F"].map(String::from));
    a.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    a
}

/// The two files iozone works on, inside the bench directory.
pub fn files(dir: &Path) -> [PathBuf; 2] {
    [dir.join("iozone.0"), dir.join("iozone.1")]
}

/// Test name → aggregate throughput of all children, from lines such as
/// `\tChildren see throughput for  2 initial writers \t=  512345.67 kB/sec`
/// (older versions print `KB/sec`; the unit is KiB/s either way).
pub fn parse(text: &str) -> Vec<IozoneResult> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("Children see throughput for")?;
            let (left, right) = rest.split_once('=')?;
            // `left` is "<count> <test name>".
            let test = left.trim().split_once(char::is_whitespace)?.1.trim();
            let kb_per_s: f64 = right.split_whitespace().next()?.parse().ok()?;
            Some(IozoneResult {
                test: test.to_string(),
                kb_per_s,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of iozone 3.4xx output in throughput mode (numbers made up).
    pub const SAMPLE: &str = "\tIozone: Performance Test of File I/O
\t        Version $Revision: 3.489 $
\tRun began: Tue Nov 24 10:00:00 2026

\tRecord Size 64 kB
\tFile size set to 16384 kB
\tCommand line used: iozone -i 0 -i 1 -i 2 -r 64k -s 16384k -t 2 -F /mnt/iozone.0 /mnt/iozone.1
\tOutput is in kBytes/sec
\tThroughput test with 2 processes
\tEach process writes a 16384 kByte file in 64 kByte records

\tChildren see throughput for  2 initial writers \t=  512345.67 kB/sec
\tParent sees throughput for  2 initial writers \t=  500000.12 kB/sec
\tMin throughput per process \t\t\t=  250000.00 kB/sec
\tAvg throughput per process \t\t\t=  256172.84 kB/sec
\tMin xfer \t\t\t\t\t=   16384.00 kB

\tChildren see throughput for  2 rewriters \t=  600000.00 kB/sec
\tChildren see throughput for  2 readers \t\t= 1234567.89 kB/sec
\tChildren see throughput for 2 re-readers \t= 2345678.90 KB/sec
\tChildren see throughput for 2 random readers \t=  345678.90 kB/sec
\tChildren see throughput for 2 random writers \t=  123456.78 kB/sec

iozone test complete.
";

    #[test]
    fn children_lines_only() {
        let r = parse(SAMPLE);
        let names: Vec<&str> = r.iter().map(|x| x.test.as_str()).collect();
        assert_eq!(
            names,
            [
                "initial writers",
                "rewriters",
                "readers",
                "re-readers",
                "random readers",
                "random writers"
            ]
        );
        assert_eq!(r[0].kb_per_s, 512345.67);
        assert_eq!(r[3].kb_per_s, 2345678.90);
        assert!(parse("nothing here\n").is_empty());
    }

    #[test]
    fn command_line() {
        let f = files(Path::new("/mnt/b"));
        let a = args(16 << 20, &f);
        assert_eq!(
            a.join(" "),
            "-i 0 -i 1 -i 2 -r 64k -s 16384k -t 2 -F /mnt/b/iozone.0 /mnt/b/iozone.1"
        );
        assert!(args(1, &f).contains(&"64k".to_string()), "at least one record");
    }
}
