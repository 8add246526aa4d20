//! Rules for entry names and brick paths. Every name that crosses the wire is
//! checked here before it touches a brick, so no crafted name can step outside
//! the directory it is meant for.

/// Longest entry name, as on ext4/xfs and in POSIX `NAME_MAX`.
pub const NAME_MAX: usize = 255;

/// The brick's private directory, hidden from the volume's namespace.
pub const PRIVATE_DIR: &[u8] = b".cairn";

/// Why a name was refused, mapped to the errno the application sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// Contains `/` or NUL, or is `.` / `..`.
    Invalid,
}

impl NameError {
    pub fn errno(self) -> i32 {
        match self {
            NameError::Empty => libc::ENOENT,
            NameError::TooLong => libc::ENAMETOOLONG,
            NameError::Invalid => libc::EINVAL,
        }
    }
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty name",
            NameError::TooLong => "name longer than 255 bytes",
            NameError::Invalid => "name contains '/' or NUL, or is '.' or '..'",
        })
    }
}

/// Checks one path component: what may be created or looked up in a directory.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// Volume names: what gluster accepts (letters, digits, `-`, `_`), 1–64 long.
pub fn check_volume_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        anyhow::bail!("invalid volume name {name:?}: use 1-64 letters, digits, '-' or '_', not starting with '-'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(check_name(b""), Err(NameError::Empty));
        assert_eq!(check_name(b"."), Err(NameError::Invalid));
        assert_eq!(check_name(b".."), Err(NameError::Invalid));
        assert_eq!(check_name(b"../etc"), Err(NameError::Invalid));
        assert_eq!(check_name(b"a/b"), Err(NameError::Invalid));
        assert_eq!(check_name(b"a\0b"), Err(NameError::Invalid));
        assert_eq!(check_name(&[b'x'; 256]), Err(NameError::TooLong));
        assert_eq!(check_name(&[b'x'; 255]), Ok(()));
        assert_eq!(check_name(b"...").map_err(|e| e.errno()), Ok(()));
    }

    proptest! {
        #[test]
        fn accepted_names_are_single_components(name in proptest::collection::vec(any::<u8>(), 0..300)) {
            if check_name(&name).is_ok() {
                prop_assert!(!name.contains(&b'/'));
                prop_assert!(!name.contains(&0));
                prop_assert!(name.len() <= NAME_MAX && !name.is_empty());
                prop_assert!(name != b"." && name != b"..");
            }
        }
    }
}
