//! The state that must survive a crash: the highest epoch this node has
//! promised, its incarnation and the leader it last followed, in
//! `<dir>/<cluster>.state`.
//!
//! Architecture Invariant: a state file is replaced only whole (temp file,
//! fsync, rename, fsync of the directory), and one that is missing a byte or
//! has one too many is refused, never guessed at. A missing file is refused
//! too: only [`StateFile::create`] (`regent init`) makes one, and it never
//! replaces one that exists. Refusing to start is safe; starting with a lower
//! promised epoch than the node really promised can elect two leaders for
//! one epoch.
//!
//! This module knows nothing of the protocol; it stores what it is given and
//! refuses only to lower it.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::core::{Epoch, MemberList, Membership, NodeId};

/// The first line of every state file, naming the format and its version.
/// Version 1 (no `leader` line) is still read, as a node that followed no
/// leader; version 2 (no `membership` line) as one that confirmed no list.
const MAGIC: &str = "regent-state 3";

/// No valid state file is this long; a longer one is refused unread.
const MAX_FILE_LEN: u64 = 4096;

/// What the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The highest epoch this node has promised, by Ack or by its own Claim.
    pub promised: Epoch,
    /// The incarnation of the running (or last) daemon.
    pub incarnation: u64,
    /// The leader and epoch this node last followed, if any.
    pub leader: Option<(NodeId, Epoch)>,
    /// The member list this node runs, as a restart needs it
    /// (docs/PROTOCOL.md §3.19).
    pub membership: Option<MemberList>,
}

/// What [`StateFile::init`] found or made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// There was no state file; one was created holding this.
    Created(Stored),
    /// A valid state file was there already, holding this; it was left as it was.
    Existing(Stored),
}

/// The state file of one node of one cluster, open for updates.
#[derive(Debug)]
pub struct StateFile {
    /// `<dir>/<cluster>.state`.
    path: PathBuf,
    /// Where a new version is written before it is renamed over `path`.
    temp_path: PathBuf,
    /// The directory, fsynced after each rename.
    dir: PathBuf,
    /// The cluster written into the file.
    cluster: String,
    /// The node written into the file.
    node: NodeId,
    /// What is durably stored now.
    current: Stored,
}

/// Why the state could not be loaded or stored.
#[derive(Debug)]
pub enum StateError {
    /// The cluster name cannot name a file.
    InvalidCluster {
        /// The name given.
        cluster: String,
    },
    /// The state directory could not be created.
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// There is no state file: the node was never initialised, or its state was lost.
    Missing {
        /// The state file.
        path: PathBuf,
    },
    /// A state file is already there, and creating one would replace it.
    Exists {
        /// The state file.
        path: PathBuf,
    },
    /// The state file exists but could not be read.
    Read {
        /// The state file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The state file is not exactly as regent writes it.
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The state file names another cluster.
    WrongCluster {
        /// The state file.
        path: PathBuf,
        /// The cluster in the file.
        found: String,
        /// The cluster configured.
        expected: String,
    },
    /// The state file names another node.
    WrongNode {
        /// The state file.
        path: PathBuf,
        /// The node in the file.
        found: u32,
        /// The node configured.
        expected: NodeId,
    },
    /// A store would lower the promised epoch or the incarnation: a bug in the caller.
    Lowered {
        /// The state file.
        path: PathBuf,
        /// What is stored now.
        stored: Box<Stored>,
        /// What the caller asked to store.
        requested: Box<Stored>,
    },
    /// Writing, syncing or renaming failed; the old state may still be in force.
    Write {
        /// The file or directory the failing step worked on.
        path: PathBuf,
        /// The failing step.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// What every refusal to use an existing state file tells the operator to do.
const WAY_OUT: &str = "regent will not start with it, because this node may have promised \
    epochs it can no longer prove. Restore it from backup, or if this node's promises are \
    provably void, remove it and run `regent init`: see README 'State file'";

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::InvalidCluster { cluster } => write!(
                f,
                "cluster name {cluster:?} cannot name a state file: use letters, digits, \
                 '-', '_' and '.', not starting with '.'"
            ),
            StateError::CreateDir { dir, source } => write!(
                f,
                "cannot create state directory {}: {source}; check [state] dir and its parents",
                dir.display()
            ),
            StateError::Missing { path } => write!(
                f,
                "there is no state file {}. On a new host, create it with `regent init` (given \
                 the same -c CONFIG as `regent run`). On a host that had one (it was deleted, or \
                 [state] dir or the cluster name changed), do not: this node may have promised \
                 epochs it no longer remembers, and starting again from epoch 0 would let it \
                 acknowledge an epoch it already acknowledged to another node, so that two \
                 nodes could lead one epoch with the same fencing token. Put the old file back \
                 instead. `regent init` is only for a node whose earlier promises are void (the \
                 whole cluster is new, or every other member has moved past any epoch this \
                 node could have promised): see README 'State file'",
                path.display()
            ),
            StateError::Exists { path } => write!(
                f,
                "state file {} already exists; it is left as it is",
                path.display()
            ),
            StateError::Read { path, source } => write!(
                f,
                "cannot read state file {}: {source}. {WAY_OUT}",
                path.display()
            ),
            StateError::Corrupt { path, what } => write!(
                f,
                "state file {} is corrupt ({what}). {WAY_OUT}",
                path.display()
            ),
            StateError::WrongCluster {
                path,
                found,
                expected,
            } => write!(
                f,
                "state file {} belongs to cluster {found:?}, not {expected:?}: it was copied or \
                 renamed. {WAY_OUT}",
                path.display()
            ),
            StateError::WrongNode {
                path,
                found,
                expected,
            } => write!(
                f,
                "state file {} belongs to node {found}, not node {expected}: it was copied from \
                 another host, or `node` changed in the config. {WAY_OUT}",
                path.display()
            ),
            StateError::Lowered {
                path,
                stored,
                requested,
            } => write!(
                f,
                "refusing to lower the state in {} from promised epoch {} incarnation {} to \
                 promised epoch {} incarnation {}: this is a bug in regent, please report it",
                path.display(),
                stored.promised,
                stored.incarnation,
                requested.promised,
                requested.incarnation
            ),
            StateError::Write { path, step, source } => write!(
                f,
                "cannot store state: {step} {} failed: {source}; the node cannot make promises \
                 durable and must stop",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateError::CreateDir { source, .. }
            | StateError::Read { source, .. }
            | StateError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl StateFile {
    /// Loads the state file for updates. A missing file is `Missing`, never a
    /// fresh node: a node that lost its file may have promised epochs it no
    /// longer remembers (see [`StateFile::create`] for a new one). A corrupt,
    /// truncated, unreadable, wrong-cluster or wrong-node file is an error
    /// saying what is wrong and the way out. A temp file left by a crash
    /// during a write is removed unread: the rename never happened, so it was
    /// never the state.
    pub fn open(
        dir: &Path,
        cluster: &str,
        node: NodeId,
    ) -> Result<(StateFile, Stored), StateError> {
        let (path, temp_path) = paths(dir, cluster)?;
        match fs::remove_file(&temp_path) {
            Ok(()) => log::warn!(
                "removed {}, left by a write that did not finish; the state is {}",
                temp_path.display(),
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A temp file we cannot remove is never read; the next store fails
            // loudly if it is still in the way.
            Err(e) => log::warn!("cannot remove {}: {e}", temp_path.display()),
        }
        let stored = load(&path, cluster, node)?;
        let file = StateFile {
            path,
            temp_path,
            dir: dir.to_owned(),
            cluster: cluster.to_owned(),
            node,
            current: stored.clone(),
        };
        Ok((file, stored))
    }

    /// Creates the state file of a new node holding `s`, and the dir (0700)
    /// if missing, durably: temp file, fsync, hard link to the state file's
    /// name, removal of the temp name, fsync of the dir (and of the parent
    /// of each dir it created). The link fails if the name exists, so a file
    /// that is there, valid or not, is never replaced (`Exists`), even one
    /// that appears meanwhile.
    pub fn create(
        dir: &Path,
        cluster: &str,
        node: NodeId,
        s: Stored,
    ) -> Result<StateFile, StateError> {
        let (path, temp_path) = paths(dir, cluster)?;
        // A dir made here is durable only once its parent is synced; without
        // that, a power cut could take the state file away with its dir.
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
            .map(Path::to_path_buf)
            .collect();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        // A dangling symlink counts as a file: it is not ours to replace.
        if fs::symlink_metadata(&path).is_ok() {
            return Err(StateError::Exists { path });
        }
        let file = StateFile {
            path,
            temp_path,
            dir: dir.to_owned(),
            cluster: cluster.to_owned(),
            node,
            current: s.clone(),
        };
        let text = render(cluster, node, &s);
        if let Err(e) = file.link_new(text.as_bytes()) {
            // Best effort: a leftover temp file is removed at the next open anyway.
            let _ = fs::remove_file(&file.temp_path);
            return Err(e);
        }
        for made in &created {
            let parent = match made.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(failed(parent, "syncing directory"))?;
        }
        Ok(file)
    }

    /// `regent init`: creates the state file of a new node with promised
    /// epoch 0 and `incarnation`, unless a valid one is there, which is left
    /// as it was. An invalid one is refused as [`StateFile::open`] refuses
    /// it. Touches nothing else in the dir: a daemon may be running, with a
    /// write under way. Returns the state file's path and what was done.
    pub fn init(
        dir: &Path,
        cluster: &str,
        node: NodeId,
        incarnation: u64,
    ) -> Result<(PathBuf, Init), StateError> {
        let (path, _) = paths(dir, cluster)?;
        match load(&path, cluster, node) {
            Ok(stored) => Ok((path, Init::Existing(stored))),
            Err(StateError::Missing { .. }) => {
                let stored = Stored {
                    promised: Epoch(0),
                    incarnation,
                    leader: None,
                    membership: None,
                };
                let file = StateFile::create(dir, cluster, node, stored.clone())?;
                Ok((file.path, Init::Created(stored)))
            }
            Err(e) => Err(e),
        }
    }

    /// Atomic durable write: temp file in the same dir, write, fsync, rename
    /// over, fsync the dir. Refuses to lower `promised` or `incarnation`.
    /// Storing what is already stored writes nothing.
    pub fn store(&mut self, s: Stored) -> Result<(), StateError> {
        if s.promised < self.current.promised || s.incarnation < self.current.incarnation {
            return Err(StateError::Lowered {
                path: self.path.clone(),
                stored: Box::new(self.current.clone()),
                requested: Box::new(s),
            });
        }
        if s == self.current {
            return Ok(());
        }
        let text = render(&self.cluster, self.node, &s);
        if let Err(e) = self.replace_with(text.as_bytes()) {
            // Best effort: a leftover temp file is removed at the next open anyway.
            let _ = fs::remove_file(&self.temp_path);
            return Err(e);
        }
        self.current = s;
        Ok(())
    }

    /// What is durably stored now.
    pub fn stored(&self) -> Stored {
        self.current.clone()
    }

    /// The state file's path, for logs and status.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the state file with `bytes`, durably.
    fn replace_with(&self, bytes: &[u8]) -> Result<(), StateError> {
        self.write_temp(bytes)?;
        fs::rename(&self.temp_path, &self.path)
            .map_err(failed(&self.path, "renaming the temp file over"))?;
        self.sync_dir()
    }

    /// Makes a state file of `bytes` where there is none, durably; `Exists`
    /// if there is one.
    fn link_new(&self, bytes: &[u8]) -> Result<(), StateError> {
        self.write_temp(bytes)?;
        match fs::hard_link(&self.temp_path, &self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists {
                    path: self.path.clone(),
                })
            }
            Err(e) => return Err(failed(&self.path, "linking the temp file to")(e)),
        }
        fs::remove_file(&self.temp_path).map_err(failed(&self.temp_path, "removing"))?;
        self.sync_dir()
    }

    /// Writes `bytes` to the temp file and syncs it.
    fn write_temp(&self, bytes: &[u8]) -> Result<(), StateError> {
        let mut temp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.temp_path)
            .map_err(failed(&self.temp_path, "creating"))?;
        temp.write_all(bytes)
            .map_err(failed(&self.temp_path, "writing"))?;
        temp.sync_all().map_err(failed(&self.temp_path, "syncing"))
    }

    /// Syncs the dir, making a rename or link in it durable.
    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(failed(&self.dir, "syncing directory"))
    }
}

/// The state file's path and its temp file's in `dir`, if the cluster's name
/// can name a file.
fn paths(dir: &Path, cluster: &str) -> Result<(PathBuf, PathBuf), StateError> {
    if !is_valid_cluster(cluster) {
        return Err(StateError::InvalidCluster {
            cluster: cluster.to_owned(),
        });
    }
    Ok((
        dir.join(format!("{cluster}.state")),
        dir.join(format!("{cluster}.state.tmp")),
    ))
}

/// Reads and checks the state file at `path`; changes nothing.
fn load(path: &Path, cluster: &str, node: NodeId) -> Result<Stored, StateError> {
    match read_limited(path) {
        Ok(bytes) => parse(&bytes, cluster, node).map_err(|e| e.at(path, cluster, node)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StateError::Missing {
            path: path.to_owned(),
        }),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Turns the error of one step of a write into a `StateError`.
fn failed<'a>(path: &'a Path, step: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Write {
        path: path.to_owned(),
        step,
        source,
    }
}

/// The incarnation for a new start: above the stored one, and at least the
/// wall-clock seconds, so that a node that lost its state file still starts
/// above every incarnation it used before (given a clock that did not jump
/// back). The caller reads the clock.
pub fn next_incarnation(stored: u64, unix_seconds: u64) -> u64 {
    stored.saturating_add(1).max(unix_seconds)
}

/// Cluster names that make a safe file name on their own.
fn is_valid_cluster(cluster: &str) -> bool {
    !cluster.is_empty()
        && !cluster.starts_with('.')
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Reads a file of at most `MAX_FILE_LEN + 1` bytes; the `+ 1` lets the parser
/// see that it is too long.
fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The exact bytes of the state file for `s`.
fn render(cluster: &str, node: NodeId, s: &Stored) -> String {
    let leader = match s.leader {
        Some((id, epoch)) => format!("{} {}", id.0, epoch.0),
        None => "none".to_owned(),
    };
    let ids = |v: &[NodeId]| -> String {
        let ids: Vec<String> = v.iter().map(|id| id.0.to_string()).collect();
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(",")
        }
    };
    let membership = match &s.membership {
        Some(l) => {
            let m = l.membership;
            let state = if l.committed {
                "committed".to_owned()
            } else {
                format!("joint {}", ids(&l.previous))
            };
            format!(
                "{} {:08x} {:08x} {} {state}",
                m.generation,
                m.digest,
                m.previous,
                ids(&l.members)
            )
        }
        None => "none".to_owned(),
    };
    seal(format!(
        "{MAGIC}\ncluster {cluster}\nnode {}\npromised {}\nincarnation {}\nleader {leader}\n\
         membership {membership}\n",
        node.0, s.promised.0, s.incarnation
    ))
}

/// The exact bytes a version 2 file held for `s` (which confirmed no list).
fn render_v2(cluster: &str, node: NodeId, s: &Stored) -> String {
    let leader = match s.leader {
        Some((id, epoch)) => format!("{} {}", id.0, epoch.0),
        None => "none".to_owned(),
    };
    seal(format!(
        "regent-state 2\ncluster {cluster}\nnode {}\npromised {}\nincarnation {}\nleader {leader}\n",
        node.0, s.promised.0, s.incarnation
    ))
}

/// The exact bytes a version 1 file held for `s` (which followed no leader).
fn render_v1(cluster: &str, node: NodeId, s: &Stored) -> String {
    seal(format!(
        "regent-state 1\ncluster {cluster}\nnode {}\npromised {}\nincarnation {}\n",
        node.0, s.promised.0, s.incarnation
    ))
}

/// `body` followed by its checksum line.
fn seal(body: String) -> String {
    let sum = hex(&Sha256::digest(body.as_bytes()));
    format!("{body}sha256 {sum}\n")
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parse failure, before the path is known.
enum ParseError {
    /// What is wrong with the file.
    Corrupt(String),
    /// The cluster the file names.
    WrongCluster(String),
    /// The node the file names.
    WrongNode(u32),
}

impl ParseError {
    /// The error for the state file at `path` of `cluster` and `node`.
    fn at(self, path: &Path, cluster: &str, node: NodeId) -> StateError {
        let path = path.to_owned();
        match self {
            ParseError::Corrupt(what) => StateError::Corrupt { path, what },
            ParseError::WrongCluster(found) => StateError::WrongCluster {
                path,
                found,
                expected: cluster.to_owned(),
            },
            ParseError::WrongNode(found) => StateError::WrongNode {
                path,
                found,
                expected: node,
            },
        }
    }
}

/// Parses a state file, accepting only the exact bytes `render` writes.
fn parse(bytes: &[u8], cluster: &str, node: NodeId) -> Result<Stored, ParseError> {
    let corrupt = |what: &str| ParseError::Corrupt(what.to_owned());
    if bytes.is_empty() {
        return Err(corrupt("empty file"));
    }
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(corrupt("longer than any state file"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text"))?;
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| corrupt("truncated or damaged: no newline at the end"))?;
    let (body, sum_line) = match body.rfind('\n') {
        Some(i) => (&text[..=i], &body[i + 1..]),
        None => return Err(corrupt("truncated or damaged: a single line")),
    };
    let sum = sum_line
        .strip_prefix("sha256 ")
        .ok_or_else(|| corrupt("truncated or damaged: the last line is not `sha256 HEX`"))?;
    if sum != hex(&Sha256::digest(body.as_bytes())) {
        return Err(corrupt("checksum mismatch"));
    }

    let mut lines = body.lines();
    let mut field = |name: &str| -> Result<&str, ParseError> {
        lines
            .next()
            .and_then(|line| line.strip_prefix(name))
            .and_then(|line| line.strip_prefix(' '))
            .ok_or_else(|| ParseError::Corrupt(format!("expected a `{name}` line")))
    };
    let version = field("regent-state")?;
    if !matches!(version, "1" | "2" | "3") {
        return Err(ParseError::Corrupt(format!(
            "format version {version:?}, this regent reads versions 1 to 3"
        )));
    }
    let found_cluster = field("cluster")?.to_owned();
    let number = |s: &str, name: &str| -> Result<u64, ParseError> {
        s.parse()
            .map_err(|_| ParseError::Corrupt(format!("`{name}` is not a number")))
    };
    let found_node = u32::try_from(number(field("node")?, "node")?)
        .map_err(|_| corrupt("`node` is out of range"))?;
    let promised = Epoch(number(field("promised")?, "promised")?);
    let incarnation = number(field("incarnation")?, "incarnation")?;
    let leader = if version == "1" {
        None
    } else {
        match field("leader")? {
            "none" => None,
            pair => {
                let (id, epoch) = pair
                    .split_once(' ')
                    .ok_or_else(|| corrupt("`leader` is neither `none` nor `ID EPOCH`"))?;
                let id = u32::try_from(number(id, "leader")?)
                    .map_err(|_| corrupt("`leader` is out of range"))?;
                Some((NodeId(id), Epoch(number(epoch, "leader")?)))
            }
        }
    };
    let membership = if version != "3" {
        None
    } else {
        match field("membership")? {
            "none" => None,
            line => {
                let bad = || {
                    corrupt(
                        "`membership` is neither `none` nor `GENERATION DIGEST PREVIOUS IDS \
                         committed` or `... joint IDS`",
                    )
                };
                let list = |text: &str| -> Result<Vec<NodeId>, ParseError> {
                    if text == "-" {
                        return Ok(Vec::new());
                    }
                    text.split(',')
                        .map(|id| id.parse::<u32>().map(NodeId).map_err(|_| bad()))
                        .collect()
                };
                let mut parts = line.split(' ');
                let mut next = || parts.next().ok_or_else(bad);
                let generation = next()?.parse::<u32>().map_err(|_| bad())?;
                let digest = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
                let previous = u32::from_str_radix(next()?, 16).map_err(|_| bad())?;
                let members = list(next()?)?;
                let (committed, ids) = match next()? {
                    "committed" => (true, Vec::new()),
                    "joint" => (false, list(next()?)?),
                    _ => return Err(bad()),
                };
                Some(MemberList {
                    membership: Membership {
                        generation,
                        digest,
                        previous,
                    },
                    committed,
                    members,
                    previous: ids,
                })
            }
        }
    };
    let stored = Stored {
        promised,
        incarnation,
        leader,
        membership,
    };
    // Only the exact bytes regent writes are accepted: this rejects extra
    // lines, spaces, leading zeros and anything else that parsed leniently.
    let exact = match version {
        "1" => render_v1(&found_cluster, NodeId(found_node), &stored),
        "2" => render_v2(&found_cluster, NodeId(found_node), &stored),
        _ => render(&found_cluster, NodeId(found_node), &stored),
    };
    if exact != text {
        return Err(corrupt("not in the exact form regent writes"));
    }
    if found_cluster != cluster {
        return Err(ParseError::WrongCluster(found_cluster));
    }
    if found_node != node.0 {
        return Err(ParseError::WrongNode(found_node));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("regent-state-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create test dir");
            TempDir(path)
        }
    }

    impl std::ops::Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn stored(promised: u64, incarnation: u64) -> Stored {
        Stored {
            promised: Epoch(promised),
            incarnation,
            leader: None,
            membership: None,
        }
    }

    /// Writes `bytes` as the state file of cluster `c` in `dir`.
    fn plant(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("c.state");
        fs::write(&path, bytes).expect("write test file");
        path
    }

    /// A body with a correct checksum appended.
    fn with_sum(body: &str) -> String {
        format!("{body}sha256 {}\n", hex(&Sha256::digest(body.as_bytes())))
    }

    /// A new node's state file in `dir`, as `regent init` makes it.
    fn new_node(dir: &Path, cluster: &str, node: NodeId) -> StateFile {
        StateFile::create(dir, cluster, node, stored(0, 0)).expect("create")
    }

    #[test]
    fn round_trip() {
        let t = TempDir::new("round-trip");
        let mut file = new_node(&t.0, "c", NodeId(3));
        assert_eq!(file.stored(), stored(0, 0));
        file.store(stored(5, 1_700_000_000)).expect("store");
        file.store(stored(6, 1_700_000_000)).expect("store");
        assert_eq!(file.stored(), stored(6, 1_700_000_000));
        drop(file);

        let (file, s) = StateFile::open(&t.0, "c", NodeId(3)).expect("reopen");
        assert_eq!(s, stored(6, 1_700_000_000));
        let text = fs::read_to_string(file.path()).expect("read");
        assert_eq!(
            text,
            with_sum(
                "regent-state 3\ncluster c\nnode 3\npromised 6\nincarnation 1700000000\n\
                 leader none\nmembership none\n"
            )
        );
        let mode = fs::metadata(file.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!t.0.join("c.state.tmp").exists());
    }

    #[test]
    fn the_confirmed_membership_round_trips_and_version_2_files_are_read() {
        let t = TempDir::new("membership");
        let mut file = StateFile::create(&t.0, "c", NodeId(3), stored(0, 9)).expect("create");
        let membership = Membership {
            generation: 4,
            digest: 0x1a2b_3c4d,
            previous: 0xfeed,
        };
        // Joint, with the list before; joint with it unknown; committed.
        let cases = [
            (vec![1, 2, 3], false, "1,2,3,4 joint 1,2,3"),
            (vec![], false, "1,2,3,4 joint -"),
            (vec![], true, "1,2,3,4 committed"),
        ];
        for (previous, committed, line) in cases {
            let joint = Stored {
                membership: Some(MemberList {
                    membership,
                    committed,
                    members: (1..=4).map(NodeId).collect(),
                    previous: previous.into_iter().map(NodeId).collect(),
                }),
                ..stored(6, 9)
            };
            file.store(joint.clone()).expect("store");
            let (_, s) = StateFile::open(&t.0, "c", NodeId(3)).expect("reopen");
            assert_eq!(s, joint);
            let text = fs::read_to_string(t.0.join("c.state")).expect("read");
            assert!(
                text.contains(&format!("\nmembership 4 1a2b3c4d 0000feed {line}\n")),
                "{text}"
            );
        }
        drop(file);
        // What the release before wrote: no membership line.
        let v2 = render_v2("c", NodeId(3), &stored(6, 9));
        plant(&t.0, v2.as_bytes());
        let (_, s) = StateFile::open(&t.0, "c", NodeId(3)).expect("version 2");
        assert_eq!(s, stored(6, 9));
    }

    #[test]
    fn the_leader_followed_round_trips_and_version_1_files_are_read() {
        let t = TempDir::new("leader");
        let mut file = StateFile::create(&t.0, "c", NodeId(3), stored(0, 9)).expect("create");
        let followed = Stored {
            leader: Some((NodeId(2), Epoch(6))),
            ..stored(6, 9)
        };
        file.store(followed.clone()).expect("store");
        drop(file);
        let (_, s) = StateFile::open(&t.0, "c", NodeId(3)).expect("reopen");
        assert_eq!(s, followed);
        assert!(fs::read_to_string(t.0.join("c.state"))
            .expect("read")
            .contains("\nleader 2 6\n"));

        // What an earlier release wrote: no leader line.
        plant(
            &t.0,
            with_sum("regent-state 1\ncluster c\nnode 3\npromised 6\nincarnation 9\n").as_bytes(),
        );
        let (_, s) = StateFile::open(&t.0, "c", NodeId(3)).expect("version 1");
        assert_eq!(s, stored(6, 9));
        // A version 1 body with a leader line is neither.
        plant(
            &t.0,
            with_sum("regent-state 1\ncluster c\nnode 3\npromised 6\nincarnation 9\nleader 2 6\n")
                .as_bytes(),
        );
        assert!(matches!(
            StateFile::open(&t.0, "c", NodeId(3)),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn extreme_values_round_trip() {
        let t = TempDir::new("extremes");
        let mut file = new_node(&t.0, "a-b_c.d", NodeId(u32::MAX));
        file.store(stored(u64::MAX, u64::MAX)).expect("store");
        let (_, s) = StateFile::open(&t.0, "a-b_c.d", NodeId(u32::MAX)).expect("reopen");
        assert_eq!(s, stored(u64::MAX, u64::MAX));
    }

    #[test]
    fn missing_dir_is_created_private() {
        let t = TempDir::new("mkdir");
        let dir = t.0.join("var/lib/regent");
        let mut file = new_node(&dir, "c", NodeId(1));
        let mode = fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        file.store(stored(1, 1)).expect("store");
    }

    #[test]
    fn a_missing_file_is_missing_not_a_fresh_node() {
        let t = TempDir::new("missing");
        // Neither in an existing dir nor in a missing one.
        for dir in [t.0.clone(), t.0.join("gone")] {
            match StateFile::open(&dir, "c", NodeId(1)) {
                Err(e @ StateError::Missing { .. }) => {
                    let text = e.to_string();
                    let path = dir.join("c.state").display().to_string();
                    assert!(text.contains(&path), "{text}");
                    assert!(text.contains("`regent init`"), "{text}");
                    assert!(text.contains("README 'State file'"), "{text}");
                }
                other => panic!("{}: {other:?}", dir.display()),
            }
            assert!(!dir.join("c.state").exists(), "open creates nothing");
        }
        assert!(!t.0.join("gone").exists(), "open creates no dir either");
    }

    #[test]
    fn create_then_open_round_trips() {
        let t = TempDir::new("create");
        let file =
            StateFile::create(&t.0, "c", NodeId(2), stored(0, 1_700_000_000)).expect("create");
        assert_eq!(file.stored(), stored(0, 1_700_000_000));
        assert_eq!(file.path(), t.0.join("c.state"));
        drop(file);
        let (mut file, s) = StateFile::open(&t.0, "c", NodeId(2)).expect("open");
        assert_eq!(s, stored(0, 1_700_000_000));
        let mode = fs::metadata(file.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!t.0.join("c.state.tmp").exists(), "no temp file is left");
        file.store(stored(3, 1_700_000_001)).expect("store");
    }

    #[test]
    fn create_never_replaces_a_file() {
        let t = TempDir::new("create-exists");
        let mut file = new_node(&t.0, "c", NodeId(1));
        file.store(stored(9, 9)).expect("store");
        let valid = fs::read(file.path()).expect("read");
        let garbage = b"garbage\n".to_vec();
        for (name, bytes) in [("valid", valid), ("corrupt", garbage)] {
            plant(&t.0, &bytes);
            match StateFile::create(&t.0, "c", NodeId(1), stored(0, 1)) {
                Err(e @ StateError::Exists { .. }) => {
                    assert!(e.to_string().contains("c.state"), "{e}")
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(
                fs::read(t.0.join("c.state")).expect("read"),
                bytes,
                "{name}"
            );
        }
        // A dangling symlink is somebody's too.
        fs::remove_file(t.0.join("c.state")).expect("rm");
        std::os::unix::fs::symlink(t.0.join("elsewhere"), t.0.join("c.state")).expect("symlink");
        assert!(matches!(
            StateFile::create(&t.0, "c", NodeId(1), stored(0, 1)),
            Err(StateError::Exists { .. })
        ));
        assert!(!t.0.join("elsewhere").exists());
    }

    #[test]
    fn init_creates_once_and_refuses_what_open_refuses() {
        let t = TempDir::new("init");
        let dir = t.0.join("state");
        let (path, done) = StateFile::init(&dir, "c", NodeId(1), 1_700_000_000).expect("init");
        assert_eq!(path, dir.join("c.state"));
        assert_eq!(done, Init::Created(stored(0, 1_700_000_000)));
        let mode = fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // Again, after the node promised something: nothing changes.
        let (mut file, _) = StateFile::open(&dir, "c", NodeId(1)).expect("open");
        file.store(stored(4, 1_700_000_001)).expect("store");
        let before = fs::read(&path).expect("read");
        // A write under way by a running daemon is not disturbed.
        fs::write(dir.join("c.state.tmp"), "in flight").expect("temp");
        let (_, done) = StateFile::init(&dir, "c", NodeId(1), 1_800_000_000).expect("init");
        assert_eq!(done, Init::Existing(stored(4, 1_700_000_001)));
        assert_eq!(fs::read(&path).expect("read"), before);
        assert!(dir.join("c.state.tmp").exists());

        // A corrupt or foreign file is refused, and left as it was.
        for bytes in [
            b"garbage\n".to_vec(),
            render("c", NodeId(2), &stored(1, 1)).into_bytes(),
        ] {
            fs::write(&path, &bytes).expect("write");
            match StateFile::init(&dir, "c", NodeId(1), 1_800_000_000) {
                Err(StateError::Corrupt { .. } | StateError::WrongNode { .. }) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(fs::read(&path).expect("read"), bytes);
        }
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let t = TempDir::new("truncated");
        let mut file = new_node(&t.0, "c", NodeId(1));
        file.store(stored(42, 7)).expect("store");
        let good = fs::read(file.path()).expect("read");
        for len in 0..good.len() {
            plant(&t.0, &good[..len]);
            match StateFile::open(&t.0, "c", NodeId(1)) {
                Err(StateError::Corrupt { .. }) => {}
                other => panic!("truncated to {len} bytes: {other:?}"),
            }
        }
        plant(&t.0, &good);
        assert_eq!(
            StateFile::open(&t.0, "c", NodeId(1)).expect("intact").1,
            stored(42, 7)
        );
    }

    #[test]
    fn every_bit_flip_is_corrupt() {
        let t = TempDir::new("bitflip");
        let good = render("c", NodeId(1), &stored(42, 7)).into_bytes();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            plant(&t.0, &bad);
            match StateFile::open(&t.0, "c", NodeId(1)) {
                Err(StateError::Corrupt { .. }) => {}
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }

    #[test]
    fn deviations_are_corrupt() {
        let t = TempDir::new("deviations");
        let body = "regent-state 3\ncluster c\nnode 1\npromised 42\nincarnation 7\nleader none\n\
                    membership none\n";
        let good = render("c", NodeId(1), &stored(42, 7));
        assert_eq!(good, with_sum(body));
        let sum = &good[body.len() + "sha256 ".len()..good.len() - 1];
        assert_eq!(sum.len(), 64);
        // The valid body with one change, correctly summed.
        let edit = |from: &str, to: &str| with_sum(&body.replace(from, to));
        let cases: Vec<(&str, String)> = vec![
            ("empty file", String::new()),
            ("newline only", "\n".to_owned()),
            ("bad checksum", format!("{body}sha256 {}\n", "0".repeat(64))),
            ("short checksum", format!("{body}sha256 {}\n", &sum[1..])),
            ("long checksum", format!("{body}sha256 {sum}0\n")),
            ("no checksum", body.to_owned()),
            (
                "checksum of another body",
                good.replace("promised 42", "promised 43"),
            ),
            (
                "uppercase checksum",
                good.to_uppercase().replace("REGENT-STATE", "regent-state"),
            ),
            ("trailing junk", format!("{good}junk")),
            ("trailing line", format!("{good}\n")),
            ("missing final newline", good[..good.len() - 1].to_owned()),
            ("leading zeros", edit("promised 42", "promised 042")),
            ("plus sign", edit("promised 42", "promised +42")),
            ("extra space", edit("promised 42", "promised  42")),
            ("trailing space", edit("promised 42", "promised 42 ")),
            ("CRLF", edit("\n", "\r\n")),
            ("missing line", edit("promised 42\n", "")),
            ("extra line", with_sum(&format!("{body}leader 1\n"))),
            (
                "lines swapped",
                edit("promised 42\nincarnation 7", "incarnation 7\npromised 42"),
            ),
            ("not a number", edit("42", "many")),
            ("negative", edit("42", "-42")),
            ("overflow", edit("42", "18446744073709551616")),
            ("node out of range", edit("node 1", "node 4294967296")),
            ("other version", edit("state 3", "state 4")),
            (
                "version 2 with a membership line",
                edit("state 3", "state 2"),
            ),
            (
                "membership not hex",
                edit("membership none", "membership 2 xyz 0"),
            ),
            (
                "membership short",
                edit("membership none", "membership 2 0000abcd"),
            ),
            (
                "membership uppercase",
                edit("membership none", "membership 2 0000ABCD 00000000"),
            ),
            ("too long", "x".repeat(MAX_FILE_LEN as usize + 10)),
        ];
        for (name, text) in cases {
            plant(&t.0, text.as_bytes());
            match StateFile::open(&t.0, "c", NodeId(1)) {
                Err(StateError::Corrupt { .. }) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        // Not UTF-8.
        plant(&t.0, &[b'a', 0xff, b'\n']);
        assert!(matches!(
            StateFile::open(&t.0, "c", NodeId(1)),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn wrong_cluster_or_node_is_refused() {
        let t = TempDir::new("wrong-owner");
        plant(&t.0, render("other", NodeId(1), &stored(1, 1)).as_bytes());
        match StateFile::open(&t.0, "c", NodeId(1)) {
            Err(StateError::WrongCluster {
                found, expected, ..
            }) => {
                assert_eq!((found.as_str(), expected.as_str()), ("other", "c"))
            }
            other => panic!("{other:?}"),
        }
        plant(&t.0, render("c", NodeId(2), &stored(1, 1)).as_bytes());
        match StateFile::open(&t.0, "c", NodeId(1)) {
            Err(StateError::WrongNode {
                found, expected, ..
            }) => assert_eq!((found, expected), (2, NodeId(1))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn leftover_temp_file_is_removed_unread() {
        let t = TempDir::new("leftover");
        let mut file = new_node(&t.0, "c", NodeId(1));
        file.store(stored(5, 5)).expect("store");
        drop(file);
        // A crash between writing the temp file and the rename: its content,
        // even a valid higher state, was never promised.
        let temp = t.0.join("c.state.tmp");
        fs::write(&temp, render("c", NodeId(1), &stored(9, 9))).expect("write temp");
        let (_, s) = StateFile::open(&t.0, "c", NodeId(1)).expect("open");
        assert_eq!(s, stored(5, 5));
        assert!(!temp.exists());

        // The same with no state file, and a half-written temp file: still
        // missing, never a fresh node.
        let fresh = t.0.join("fresh");
        fs::create_dir(&fresh).expect("mkdir");
        fs::write(fresh.join("c.state.tmp"), "regent-state 1\ncl").expect("write temp");
        assert!(matches!(
            StateFile::open(&fresh, "c", NodeId(1)),
            Err(StateError::Missing { .. })
        ));
        assert!(!fresh.join("c.state.tmp").exists());
    }

    #[test]
    fn store_refuses_to_lower() {
        let t = TempDir::new("lower");
        let mut file = new_node(&t.0, "c", NodeId(1));
        file.store(stored(5, 10)).expect("store");
        for bad in [stored(4, 10), stored(4, 11), stored(5, 9), stored(0, 0)] {
            match file.store(bad.clone()) {
                Err(e @ StateError::Lowered { .. }) => {
                    assert!(e.to_string().contains("bug"), "{e}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        file.store(stored(5, 10)).expect("storing the same is fine");
        file.store(stored(5, 11))
            .expect("raising the incarnation alone is fine");
        drop(file);
        assert_eq!(
            StateFile::open(&t.0, "c", NodeId(1)).expect("reopen").1,
            stored(5, 11)
        );
    }

    #[test]
    fn unusable_dir_is_an_error() {
        // Permissions do not stop root, a regular file in the path does.
        let t = TempDir::new("unusable");
        let blocker = t.0.join("file");
        fs::write(&blocker, "").expect("write");
        let create = |dir: &Path| StateFile::create(dir, "c", NodeId(1), stored(0, 0));
        match create(&blocker.join("sub")) {
            Err(e @ StateError::CreateDir { .. }) => {
                assert!(e.to_string().contains("file/sub"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        match create(&blocker) {
            Err(StateError::CreateDir { .. }) => {}
            other => panic!("{other:?}"),
        }
        // Open creates nothing; it cannot read through a file either.
        match StateFile::open(&blocker, "c", NodeId(1)) {
            Err(StateError::Read { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn store_failure_is_an_error_and_changes_nothing() {
        let t = TempDir::new("store-fails");
        let dir = t.0.join("state");
        let mut file = new_node(&dir, "c", NodeId(1));
        file.store(stored(1, 1)).expect("store");
        fs::remove_dir_all(&dir).expect("rm");
        fs::write(&dir, "").expect("a file where the dir was");
        match file.store(stored(2, 2)) {
            Err(e @ StateError::Write { .. }) => {
                assert!(e.to_string().contains("must stop"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(file.stored(), stored(1, 1));
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let t = TempDir::new("unreadable");
        // A directory where the file should be cannot be read, even by root.
        fs::create_dir(t.0.join("c.state")).expect("mkdir");
        match StateFile::open(&t.0, "c", NodeId(1)) {
            Err(StateError::Read { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_cluster_names_are_refused() {
        let t = TempDir::new("names");
        for name in ["", ".", "..", ".hidden", "a/b", "a b", "a\nb", "é"] {
            match StateFile::open(&t.0, name, NodeId(1)) {
                Err(StateError::InvalidCluster { .. }) => {}
                other => panic!("{name:?}: {other:?}"),
            }
            match StateFile::init(&t.0, name, NodeId(1), 1) {
                Err(StateError::InvalidCluster { .. }) => {}
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_path_and_the_way_out() {
        let t = TempDir::new("messages");
        let path = plant(&t.0, b"garbage\n");
        let e = StateFile::open(&t.0, "c", NodeId(1)).expect_err("corrupt");
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("README 'State file'"), "{text}");
    }

    #[test]
    fn next_incarnation_table() {
        let cases = [
            (0, 0, 1),
            (0, 1_700_000_000, 1_700_000_000),
            (1_700_000_000, 1_700_000_000, 1_700_000_001),
            (1_700_000_005, 1_700_000_000, 1_700_000_006), // clock behind the stored value
            (5, 1_700_000_000, 1_700_000_000),             // state lost and restored from backup
            (u64::MAX, 0, u64::MAX),
        ];
        for (stored, now, want) in cases {
            assert_eq!(next_incarnation(stored, now), want, "{stored} {now}");
        }
    }
}
