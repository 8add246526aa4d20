//! `volume heal VOL split-brain …`: the administrator settles a
//! split-brain. The CLI acts as a client of the volume's replica sets (with
//! the node's credentials), walks to the file and has the set holding it
//! keep the chosen copy (`cairn_client::afr::Replicate::settle_split_brain`).

use anyhow::{bail, Context};
use cairn_client::afr::{Policy, Rule};
use cairn_client::layer::Subvolume;
use cairn_common::addr::BrickAddr;
use cairn_common::proto::{AdminReply, AdminRequest, Fop, Reply, VolumeSpec};
use cairn_common::Gfid;
use std::time::Duration;

/// What to keep, as the command line says it.
pub enum Choice {
    BiggerFile,
    LatestMtime,
    SourceBrick(String),
}

pub struct SplitBrain {
    pub volume: String,
    pub choice: Choice,
    /// None: every split-brain file of the source brick.
    pub file: Option<String>,
}

/// Parses the words after `volume heal VOL split-brain`.
pub fn parse(volume: String, words: &[&str]) -> anyhow::Result<SplitBrain> {
    let (choice, file) = match words {
        ["bigger-file", file] => (Choice::BiggerFile, Some(file.to_string())),
        ["latest-mtime", file] => (Choice::LatestMtime, Some(file.to_string())),
        ["source-brick", brick, file] => (Choice::SourceBrick(brick.to_string()), Some(file.to_string())),
        ["source-brick", brick] => (Choice::SourceBrick(brick.to_string()), None),
        _ => bail!(
            "use: volume heal VOL split-brain bigger-file FILE | latest-mtime FILE | source-brick NODE:/path [FILE]"
        ),
    };
    if let Choice::SourceBrick(b) = &choice {
        BrickAddr::parse(b)?;
    }
    if let Some(f) = &file {
        if !f.starts_with('/') || f.split('/').any(|c| c == "..") {
            bail!("FILE is a path from the volume's root, such as /dir/file");
        }
    }
    Ok(SplitBrain { volume, choice, file })
}

/// One file's outcome of `volume heal VOL split-brain …`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settled {
    pub file: String,
    /// Why it could not be healed (`None`: healed).
    pub error: Option<String>,
}

/// gluster's report: `Healed FILE.` per file (or why not).
pub fn settled_text(settled: &[Settled]) -> String {
    if settled.is_empty() {
        return "No split-brain entries on that brick.\n".to_string();
    }
    settled
        .iter()
        .map(|s| match &s.error {
            None => format!("Healed {}.\n", s.file),
            Some(e) => format!("Healing {} failed: {e}.\n", s.file),
        })
        .collect()
}

/// Settles the split-brain(s); one outcome per file.
pub async fn run(
    node: &str,
    endpoint: &quinn::Endpoint,
    admin: impl AsyncFn(AdminRequest) -> anyhow::Result<AdminReply>,
    req: SplitBrain,
) -> anyhow::Result<Vec<Settled>> {
    let timeout = Duration::from_secs(60);
    let spec = cairn_client::volume::fetch_spec(endpoint, &[node.to_string()], &req.volume, timeout).await?;
    let sets = cairn_client::volume::replica_sets(endpoint, &spec, timeout)?;
    let rule = match &req.choice {
        Choice::BiggerFile => Rule::Policy(Policy::Size),
        Choice::LatestMtime => Rule::Policy(Policy::Mtime),
        Choice::SourceBrick(b) => Rule::Brick(brick_id(&spec, b)?),
    };
    let files = match &req.file {
        Some(f) => vec![f.clone()],
        None => {
            let Choice::SourceBrick(b) = &req.choice else {
                bail!("a FILE is needed");
            };
            split_brain_paths(&spec, b, admin).await?
        }
    };
    let mut out = Vec::new();
    for file in files {
        let error = settle(&sets, &file, rule).await.err().map(|e| format!("{e:#}"));
        out.push(Settled { file, error });
    }
    Ok(out)
}

fn brick_id(spec: &VolumeSpec, text: &str) -> anyhow::Result<uuid::Uuid> {
    let b = BrickAddr::parse(text)?;
    spec.bricks
        .iter()
        .find(|x| x.path == b.path && cairn_common::addr::same_node(&x.node, &b.node))
        .map(|x| x.id)
        .with_context(|| format!("{text} is not a brick of volume {}", spec.name))
}

/// The paths `heal info split-brain` lists for a brick.
async fn split_brain_paths(
    spec: &VolumeSpec,
    brick: &str,
    admin: impl AsyncFn(AdminRequest) -> anyhow::Result<AdminReply>,
) -> anyhow::Result<Vec<String>> {
    let id = brick_id(spec, brick)?;
    let reply = admin(AdminRequest::VolumeHealInfo {
        name: spec.name.clone(),
        split_brain: true,
    })
    .await?;
    let AdminReply::HealInfo(bricks) = reply else {
        bail!("unexpected reply {reply:?}");
    };
    let mine = bricks
        .into_iter()
        .find(|b| b.brick_id == id)
        .and_then(|b| b.entries)
        .context("the brick's node did not answer")?;
    let mut paths = Vec::new();
    for e in mine {
        match e.path {
            Some(p) => paths.push(p),
            None => eprintln!(
                "skipping <gfid:{}>: its path is not known (access it once through a mount)",
                e.gfid
            ),
        }
    }
    Ok(paths)
}

/// Walks to `file`'s directory (directories exist on every set) and has
/// the set that holds the file settle it.
async fn settle(sets: &[std::sync::Arc<cairn_client::afr::Replicate>], file: &str, rule: Rule) -> anyhow::Result<()> {
    let parts: Vec<&str> = file.split('/').filter(|p| !p.is_empty()).collect();
    let (name, dirs) = parts.split_last().context("FILE names the root")?;
    let mut parent = Gfid::ROOT;
    for d in dirs {
        let (reply, _) = sets[0]
            .call(
                Fop::Lookup {
                    parent,
                    name: d.as_bytes().to_vec(),
                },
                bytes::Bytes::new(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("looking up {d}: {}", std::io::Error::from_raw_os_error(e.0)))?;
        let Reply::Entry(a) = reply else {
            bail!("looking up {d}: unexpected reply");
        };
        if !a.is_dir() {
            bail!("{d} is not a directory");
        }
        parent = a.gfid;
    }
    let mut found = false;
    for set in sets {
        match set.settle_split_brain(parent, name.as_bytes(), rule).await {
            Ok(true) => return Ok(()),
            Ok(false) => found = true,
            Err(e) if e.0 == libc::ENOENT => {}
            Err(e) => bail!("{}", std::io::Error::from_raw_os_error(e.0)),
        }
    }
    if found {
        bail!("the file is not in split-brain (or the chosen copy is not among the disagreeing ones)")
    }
    bail!("no such file")
}
