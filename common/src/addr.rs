//! Node addresses (`HOST[:PORT]`, default port 24007) and brick addresses
//! (`NODE:/abs/path`), parsed once so every binary agrees on the syntax.

use std::net::{SocketAddr, ToSocketAddrs};

pub const DEFAULT_PORT: u16 = 24007;

/// Splits `HOST[:PORT]`, accepting `[v6]:port` and bare IPv6.
pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    if s.is_empty() {
        anyhow::bail!("empty node address");
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("bad node address {s:?}: missing ']'"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p, s)?,
            None if tail.is_empty() => DEFAULT_PORT,
            None => anyhow::bail!("bad node address {s:?}"),
        };
        return Ok((host.to_string(), port));
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), DEFAULT_PORT)),
        1 => {
            let (h, p) = s.split_once(':').expect("one colon");
            if h.is_empty() {
                anyhow::bail!("bad node address {s:?}: empty host");
            }
            Ok((h.to_string(), parse_port(p, s)?))
        }
        // A bare IPv6 address without brackets carries no port.
        _ => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

fn parse_port(p: &str, whole: &str) -> anyhow::Result<u16> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => anyhow::bail!("bad port in node address {whole:?}"),
        Ok(n) => Ok(n),
    }
}

/// Canonical text of a node address: `host:port`, `[v6]:port`.
pub fn canonical_node(s: &str) -> anyhow::Result<String> {
    let (host, port) = split_host_port(s)?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Resolves a node address to a socket address.
pub fn resolve_node(s: &str) -> anyhow::Result<SocketAddr> {
    let (host, port) = split_host_port(s)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{s:?} resolves to no address"))
}

/// A brick address `NODE:/abs/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickAddr {
    pub node: String,
    pub path: String,
}

impl BrickAddr {
    pub fn parse(s: &str) -> anyhow::Result<BrickAddr> {
        // The path starts at the first ":/"; everything before is the node.
        let idx = s
            .find(":/")
            .ok_or_else(|| anyhow::anyhow!("bad brick {s:?}: expected NODE:/absolute/path"))?;
        let node = canonical_node(&s[..idx])?;
        let path = normalize_abs_path(&s[idx + 1..]).ok_or_else(|| {
            anyhow::anyhow!("bad brick path in {s:?}: must be absolute, without '.' or '..' components")
        })?;
        Ok(BrickAddr { node, path })
    }
}

impl std::fmt::Display for BrickAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.node, self.path)
    }
}

/// `/a//b/` → `/a/b`; refuses relative paths and `.`/`..` components, which
/// would make "is this brick inside that one?" checks unreliable.
pub fn normalize_abs_path(p: &str) -> Option<String> {
    if !p.starts_with('/') || p.contains('\0') {
        return None;
    }
    let mut out = String::new();
    for comp in p.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return None;
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Do two `host:port` strings name the same node? Equal text, or equal
/// once resolved (a host name and its address).
pub fn same_node(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (resolve_node(a), resolve_node(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Is `inner` the same as, or beneath, `outer` (both normalized)?
pub fn path_within(inner: &str, outer: &str) -> bool {
    inner == outer || outer == "/" || inner.starts_with(&format!("{outer}/"))
}

/// `NODE:/VOL` as given to `mount`.
pub fn parse_volume_source(s: &str) -> anyhow::Result<(String, String)> {
    let idx = s
        .rfind(":/")
        .ok_or_else(|| anyhow::anyhow!("bad volume source {s:?}: expected NODE:/VOLUME"))?;
    let node = canonical_node(&s[..idx])?;
    let vol = &s[idx + 2..];
    crate::names::check_volume_name(vol)?;
    Ok((node, vol.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_forms() {
        assert_eq!(canonical_node("127.0.0.2").unwrap(), "127.0.0.2:24007");
        assert_eq!(canonical_node("127.0.0.2:7000").unwrap(), "127.0.0.2:7000");
        assert_eq!(canonical_node("[::1]:7000").unwrap(), "[::1]:7000");
        assert_eq!(canonical_node("::1").unwrap(), "[::1]:24007");
        assert_eq!(canonical_node("node1").unwrap(), "node1:24007");
        assert!(canonical_node("node1:0").is_err());
        assert!(canonical_node("node1:x").is_err());
        assert!(canonical_node("").is_err());
    }

    #[test]
    fn brick_forms() {
        let b = BrickAddr::parse("127.0.0.2:/data//b1/").unwrap();
        assert_eq!(b.node, "127.0.0.2:24007");
        assert_eq!(b.path, "/data/b1");
        let b = BrickAddr::parse("[::1]:7000:/b").unwrap();
        assert_eq!((b.node.as_str(), b.path.as_str()), ("[::1]:7000", "/b"));
        assert!(BrickAddr::parse("node:relative").is_err());
        assert!(BrickAddr::parse("node:/a/../b").is_err());
        assert!(BrickAddr::parse("/only/path").is_err());
    }

    #[test]
    fn nesting() {
        assert!(path_within("/a/b", "/a"));
        assert!(path_within("/a", "/a"));
        assert!(!path_within("/ab", "/a"));
        assert!(path_within("/x", "/"));
    }

    #[test]
    fn volume_sources() {
        assert_eq!(
            parse_volume_source("127.0.0.2:/gv0").unwrap(),
            ("127.0.0.2:24007".to_string(), "gv0".to_string())
        );
        assert!(parse_volume_source("127.0.0.2:/a/b").is_err());
        assert!(parse_volume_source("gv0").is_err());
    }
}
