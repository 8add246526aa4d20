//! A tiny second process for the end-to-end tests: performs one file
//! operation (possibly as another user, set up by the caller) and prints
//! `OK …` or `ERR <errno>`. Lock holders print `LOCKED` and keep their lock
//! until their stdin closes.
//!
//! Usage: `cairn-test-helper OP ARGS…` with OP one of
//! `create PATH MODE`, `read PATH`, `write PATH DATA`, `append PATH DATA`,
//! `mkdir PATH MODE`, `chmod PATH MODE`, `chown PATH UID GID`,
//! `unlink PATH`, `rmdir PATH`, `rename FROM TO`, `truncate PATH LEN`,
//! `stat PATH`, `utime-now PATH`, `utime-set PATH SECS`,
//! `setlk PATH START LEN r|w`, `getlk PATH START LEN r|w`,
//! `hold-lock PATH START LEN r|w`, `flock PATH ex|sh`, `hold-flock PATH ex|sh`.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c(p: &str) -> CString {
    CString::new(Path::new(p).as_os_str().as_bytes()).expect("no NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn verdict(ret: i64) -> String {
    if ret < 0 {
        format!("ERR {}", errno())
    } else {
        "OK".to_string()
    }
}

fn octal(s: &str) -> u32 {
    u32::from_str_radix(s, 8).expect("octal mode")
}

fn num<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("number")
}

fn open(path: &str, flags: i32, mode: u32) -> i32 {
    // SAFETY: valid C string.
    unsafe { libc::open(c(path).as_ptr(), flags | libc::O_CLOEXEC, mode) }
}

fn lock_struct(typ: &str, start: &str, len: &str) -> libc::flock {
    // SAFETY: flock is plain data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match typ {
        "r" => libc::F_RDLCK as i16,
        "w" => libc::F_WRLCK as i16,
        other => panic!("lock type {other}"),
    };
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = num(start);
    fl.l_len = num(len);
    fl
}

fn wait_for_stdin_eof() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn run(args: &[String]) -> String {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["create", path, mode] => {
            let fd = open(path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, octal(mode));
            if fd >= 0 {
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
            }
            verdict(fd.into())
        }
        ["read", path] => match std::fs::read(path) {
            Ok(d) => format!("OK {}", String::from_utf8_lossy(&d)),
            Err(e) => format!("ERR {}", e.raw_os_error().unwrap_or(0)),
        },
        ["write", path, data] | ["append", path, data] => {
            let flags = if a[0] == "append" {
                libc::O_WRONLY | libc::O_APPEND
            } else {
                libc::O_WRONLY
            };
            let fd = open(path, flags, 0);
            if fd < 0 {
                return verdict(-1);
            }
            // SAFETY: valid buffer and fd.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            let v = verdict(n as i64);
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            v
        }
        // SAFETY (all below): valid C strings and plain arguments.
        ["mkdir", path, mode] => verdict(unsafe { libc::mkdir(c(path).as_ptr(), octal(mode)) }.into()),
        ["chmod", path, mode] => verdict(unsafe { libc::chmod(c(path).as_ptr(), octal(mode)) }.into()),
        ["chown", path, uid, gid] => verdict(unsafe { libc::chown(c(path).as_ptr(), num(uid), num(gid)) }.into()),
        ["unlink", path] => verdict(unsafe { libc::unlink(c(path).as_ptr()) }.into()),
        ["rmdir", path] => verdict(unsafe { libc::rmdir(c(path).as_ptr()) }.into()),
        ["rename", from, to] => verdict(unsafe { libc::rename(c(from).as_ptr(), c(to).as_ptr()) }.into()),
        ["truncate", path, len] => verdict(unsafe { libc::truncate(c(path).as_ptr(), num(len)) }.into()),
        ["stat", path] => {
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::stat(c(path).as_ptr(), &mut st) } < 0 {
                return verdict(-1);
            }
            format!("OK {} {} {:o}", st.st_uid, st.st_gid, st.st_mode)
        }
        ["utime-now", path] => {
            verdict(unsafe { libc::utimensat(libc::AT_FDCWD, c(path).as_ptr(), std::ptr::null(), 0) }.into())
        }
        ["utime-set", path, secs] => {
            let t = libc::timespec {
                tv_sec: num(secs),
                tv_nsec: 0,
            };
            let times = [t, t];
            verdict(unsafe { libc::utimensat(libc::AT_FDCWD, c(path).as_ptr(), times.as_ptr(), 0) }.into())
        }
        ["setlk", path, start, len, typ] | ["getlk", path, start, len, typ] => {
            let mode = if *typ == "r" { libc::O_RDONLY } else { libc::O_RDWR };
            let fd = open(path, mode, 0);
            if fd < 0 {
                return verdict(-1);
            }
            let mut fl = lock_struct(typ, start, len);
            let out = if a[0] == "setlk" {
                verdict(unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) }.into())
            } else if unsafe { libc::fcntl(fd, libc::F_GETLK, &mut fl) } < 0 {
                verdict(-1)
            } else if fl.l_type == libc::F_UNLCK as i16 {
                "OK UNLCK".to_string()
            } else {
                let t = if fl.l_type == libc::F_WRLCK as i16 { "w" } else { "r" };
                format!("OK LOCKED {t} {} {} {}", fl.l_pid, fl.l_start, fl.l_len)
            };
            unsafe { libc::close(fd) };
            out
        }
        ["hold-lock", path, start, len, typ] => {
            let mode = if *typ == "r" { libc::O_RDONLY } else { libc::O_RDWR };
            let fd = open(path, mode, 0);
            if fd < 0 {
                return verdict(-1);
            }
            let fl = lock_struct(typ, start, len);
            if unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) } < 0 {
                return verdict(-1);
            }
            println!("LOCKED");
            let _ = std::io::stdout().flush();
            wait_for_stdin_eof();
            "OK".to_string()
        }
        ["flock", path, kind] | ["hold-flock", path, kind] => {
            let fd = open(path, libc::O_RDONLY, 0);
            if fd < 0 {
                return verdict(-1);
            }
            let op = if *kind == "ex" { libc::LOCK_EX } else { libc::LOCK_SH };
            let r = unsafe { libc::flock(fd, op | libc::LOCK_NB) };
            if a[0] == "flock" || r < 0 {
                let v = verdict(r.into());
                unsafe { libc::close(fd) };
                return v;
            }
            println!("LOCKED");
            let _ = std::io::stdout().flush();
            wait_for_stdin_eof();
            "OK".to_string()
        }
        _ => {
            eprintln!("cairn-test-helper: bad arguments {args:?}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = run(&args);
    // A lock holder's reader may be gone by now: ignore a closed stdout.
    let _ = writeln!(std::io::stdout(), "{out}");
}
