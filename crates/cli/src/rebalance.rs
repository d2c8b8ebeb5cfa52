//! `rebalance --from OLD --to NEW`: moves every session whose node changes between two
//! topologies, in the background of a running application (see
//! `sessiond_client::migration` for what one move does and why it is safe).
//!
//! A topology file is TOML, one `[[node]]` table per node:
//!
//! ```toml
//! [[node]]
//! name = "sessiond-0"
//! addr = "10.0.0.5:7878"
//! ```
//!
//! The work goes in passes over the old topology's nodes, `SCAN` batch by batch. After
//! each batch the progress file records each node's cursor (written to a temporary file
//! and renamed over the old one, so a crash leaves the last complete state): run the same
//! command again and it continues where it stopped. A batch that was interrupted is
//! scanned again, which is safe: entries already moved are no longer on the old node.
//! The moves of each batch are recorded in the progress file as pending, flushed to disk,
//! before any of their copies is made, and cleared with the batch's cursor. Each move that
//! settles meanwhile is appended at once to a journal next to it (`FILE.settled`, lines
//! `BATCH HEXKEY`; written, not flushed: it must survive the process being killed, and
//! losing it in a power cut costs sessions, never brings one back). A run that finds moves
//! left pending by an interrupted one, and not in the journal, settles them first by
//! deleting the copy they may have left at the new node (why that is safe is in
//! `sessiond_client::migration`). A move that fails keeps its record and fails the run: a
//! copy is never left behind without one.
//! Passes repeat until one finds nothing to move; entries changed by the application
//! while they were being moved are what a later pass picks up. Then the previous
//! topology can be dropped from the application's configuration, and the progress file
//! deleted.
//!
//! Output: a progress line on stderr at most every `--report-every`; at the end one line
//! on stdout, `done passes N scanned N moved N changed N ended N refused N`. Exit 0 when
//! nothing is left to move, 1 if sessions were refused by their new node (an owner over
//! its session limit there), 2 on errors (the progress file keeps what was done).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sessiond_client::migration::{Pending, Rebalance, Tally};
use sessiond_client::placement::{Node, Topology};
use sessiond_client::{Client, Credentials, TlsOptions};

use crate::run::Outcome;

/// Entries asked of one `SCAN` (a hint: the server answers whole shards).
const SCAN_BATCH: u32 = 2000;

/// A topology file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    node: Vec<NodeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    addr: String,
}

/// Reads the topology in `path`.
pub fn read_topology(path: &Path) -> anyhow::Result<Topology> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: TopologyFile =
        toml::from_str(&text).with_context(|| format!("{}: not a topology", path.display()))?;
    let nodes = file
        .node
        .into_iter()
        .map(|n| Node::new(n.name, n.addr))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}", path.display()))?;
    Topology::new(nodes).with_context(|| format!("{}", path.display()))
}

/// What the progress file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Progress {
    /// The node names of both topologies: resuming with other topologies is refused.
    from: Vec<String>,
    to: Vec<String>,
    /// The pass under way, from 1.
    pass: u32,
    /// Each source node's cursor in this pass, and whether it is done.
    source: Vec<SourceProgress>,
    /// Counts of this pass so far, and of all passes.
    this_pass: Counts,
    total: Counts,
    /// The number of the batch under way (or last done): what its journal lines carry.
    #[serde(default)]
    batch: u64,
    /// Moves whose copy may exist at the new node and that are not settled yet.
    #[serde(default)]
    pending: Vec<PendingMove>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The journal of settled moves (see the module docs).
struct Journal {
    file: std::fs::File,
}

impl Journal {
    fn path(progress: &Path) -> PathBuf {
        let mut name = progress.file_name().unwrap_or_default().to_os_string();
        name.push(".settled");
        progress.with_file_name(name)
    }

    fn open(progress: &Path) -> anyhow::Result<Journal> {
        let path = Journal::path(progress);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Journal { file })
    }

    /// Records that the move of `key` in batch `batch` is settled: one write of one line,
    /// so a process killed midway leaves whole lines and at most one torn last line.
    fn append(&mut self, batch: u64, key: &[u8]) -> std::io::Result<()> {
        self.file
            .write_all(format!("{batch} {}\n", hex(key)).as_bytes())
    }

    /// Forgets everything: called once the progress file no longer lists what it holds.
    fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)
    }

    /// The hexadecimal keys the journal of `progress` says are settled in batch `batch`.
    /// A torn or foreign line counts for nothing: its move is then settled again, which
    /// is safe.
    fn settled(progress: &Path, batch: u64) -> anyhow::Result<HashSet<String>> {
        let path = Journal::path(progress);
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let complete = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
        let batch = batch.to_string();
        Ok(complete
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(b, _)| *b == batch)
            .map(|(_, key)| key.to_string())
            .collect())
    }
}

/// A [`Pending`] move as the progress file holds it: the key in hexadecimal, since keys
/// are bytes and TOML strings are text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct PendingMove {
    target: String,
    key: String,
    version: u64,
}

impl From<&Pending> for PendingMove {
    fn from(p: &Pending) -> PendingMove {
        PendingMove {
            target: p.target.clone(),
            key: hex(&p.key),
            version: p.version,
        }
    }
}

impl PendingMove {
    fn decode(&self) -> anyhow::Result<Pending> {
        let hex = self.key.as_bytes();
        if !hex.len().is_multiple_of(2) {
            bail!("pending key {:?} is not hexadecimal", self.key);
        }
        let key = hex
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .with_context(|| format!("pending key {:?} is not hexadecimal", self.key))?;
        Ok(Pending {
            target: self.target.clone(),
            key,
            version: self.version,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SourceProgress {
    name: String,
    cursor: u64,
    done: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Counts {
    scanned: u64,
    moved: u64,
    changed: u64,
    ended: u64,
    refused: u64,
}

impl From<Counts> for Tally {
    fn from(c: Counts) -> Tally {
        Tally {
            scanned: c.scanned,
            moved: c.moved,
            changed: c.changed,
            ended: c.ended,
            refused: c.refused,
        }
    }
}

impl From<Tally> for Counts {
    fn from(t: Tally) -> Counts {
        Counts {
            scanned: t.scanned,
            moved: t.moved,
            changed: t.changed,
            ended: t.ended,
            refused: t.refused,
        }
    }
}

fn names(t: &Topology) -> Vec<String> {
    t.nodes().iter().map(|n| n.name().to_string()).collect()
}

impl Progress {
    fn start(from: &Topology, to: &Topology, pass: u32, total: Counts) -> Progress {
        Progress {
            from: names(from),
            to: names(to),
            pass,
            source: from
                .nodes()
                .iter()
                .map(|n| SourceProgress {
                    name: n.name().to_string(),
                    cursor: 0,
                    done: false,
                })
                .collect(),
            this_pass: Counts::default(),
            total,
            batch: 0,
            pending: Vec::new(),
        }
    }

    fn load(path: &Path) -> anyhow::Result<Option<Progress>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(toml::from_str(&text).with_context(|| {
                format!(
                    "{}: not a progress file (delete it to start over)",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the progress to a temporary file next to `path`, flushed, then renames it
    /// over `path`: a crash leaves either the old or the new state, never half of one.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self)?;
        let tmp = temporary(path);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename is durable once the directory is: pending moves must survive a
            // power loss, not only a crash of this process.
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The options of `rebalance`.
pub struct Options {
    /// The old topology file.
    pub from: PathBuf,
    /// The new topology file.
    pub to: PathBuf,
    /// Where progress is kept.
    pub progress: PathBuf,
    /// Moves in flight at once.
    pub concurrency: usize,
    /// At most this many entries scanned per second (0: no limit).
    pub rate: u64,
    /// How often a progress line is printed.
    pub report_every: Duration,
    /// Request timeout.
    pub timeout: Duration,
    /// `--user`, with its password.
    pub credentials: Option<Credentials>,
    /// `--tls` and its files.
    pub tls: Option<TlsOptions>,
}

/// Runs the rebalance to its end (or the first error).
pub async fn run(options: Options) -> anyhow::Result<Outcome> {
    let from = read_topology(&options.from)?;
    let to = read_topology(&options.to)?;
    let mut progress = match Progress::load(&options.progress)? {
        Some(saved) => {
            if saved.from != names(&from) || saved.to != names(&to) {
                bail!(
                    "{} belongs to a rebalance between other topologies: delete it to start over",
                    options.progress.display()
                );
            }
            eprintln!(
                "resuming pass {} from {}",
                saved.pass,
                options.progress.display()
            );
            saved
        }
        None => Progress::start(&from, &to, 1, Counts::default()),
    };
    let client_for = |node: &Node| {
        let mut builder = Client::builder(node.addr())
            .request_timeout(options.timeout)
            .connect_timeout(options.timeout)
            .client_name("sessiond-cli rebalance");
        if let Some(credentials) = &options.credentials {
            builder = builder.with_credentials(credentials.clone());
        }
        if let Some(tls) = &options.tls {
            builder = builder.tls(tls.clone());
        }
        builder.build()
    };
    let rebalance =
        Rebalance::new(from.clone(), to.clone(), client_for).concurrency(options.concurrency);
    let mut journal = Journal::open(&options.progress)?;
    settle(&rebalance, &mut progress, &options.progress, &mut journal).await?;
    let mut journal_failed = None;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        for i in 0..progress.source.len() {
            while !progress.source[i].done {
                let batch_started = Instant::now();
                let (name, cursor) = (progress.source[i].name.clone(), progress.source[i].cursor);
                let scanned = rebalance
                    .scan(&name, cursor, SCAN_BATCH)
                    .await
                    .with_context(|| format!("node {name}: batch at cursor {cursor}"))?;
                let next = scanned.next_cursor;
                let mut tally = Tally {
                    scanned: scanned.stays,
                    ..Tally::default()
                };
                progress.batch += 1;
                let batch = progress.batch;
                progress.pending = scanned
                    .moves
                    .iter()
                    .map(|m| (&m.pending()).into())
                    .collect();
                if !progress.pending.is_empty() {
                    // Durable before the first copy exists (see the module docs).
                    progress.save(&options.progress)?;
                }
                let (done, unsettled, error) = rebalance
                    .run(scanned.moves, |p| {
                        if let Err(e) = journal.append(batch, &p.key) {
                            journal_failed.get_or_insert(e);
                        }
                    })
                    .await;
                tally.merge(done);
                progress.pending = unsettled.iter().map(PendingMove::from).collect();
                if let Some(e) = error {
                    progress.save(&options.progress)?;
                    return Err(e).with_context(|| {
                        format!(
                            "node {name}: batch at cursor {cursor}: {} moves left pending in \
                             {} (the next run settles them)",
                            unsettled.len(),
                            options.progress.display()
                        )
                    });
                }
                let mut this_pass = Tally::from(progress.this_pass);
                this_pass.merge(tally);
                progress.this_pass = this_pass.into();
                progress.source[i].cursor = next;
                progress.source[i].done = next == 0;
                progress.save(&options.progress)?;
                journal.clear().with_context(|| {
                    format!(
                        "cannot clear {}",
                        Journal::path(&options.progress).display()
                    )
                })?;
                if let Some(e) = journal_failed.take() {
                    // The batch is done and recorded, so nothing is lost; but until the
                    // journal works, a crash could log out the users of the moves in flight.
                    eprintln!(
                        "warning: cannot append to {}: {e}",
                        Journal::path(&options.progress).display()
                    );
                }
                if last_report.elapsed() >= options.report_every {
                    report_line(&progress, i, started.elapsed());
                    last_report = Instant::now();
                }
                pace(options.rate, tally.scanned, batch_started.elapsed()).await;
            }
        }
        let pass = Tally::from(progress.this_pass);
        let mut total = Tally::from(progress.total);
        total.merge(pass);
        report_line(
            &progress,
            progress.source.len().saturating_sub(1),
            started.elapsed(),
        );
        // Refused entries stay refused until someone acts: another pass would not help.
        if pass.moved == 0 && pass.changed == 0 {
            let total = Counts::from(total);
            println!(
                "done passes {} scanned {} moved {} changed {} ended {} refused {}",
                progress.pass,
                total.scanned,
                total.moved,
                total.changed,
                total.ended,
                total.refused
            );
            return Ok(if pass.refused > 0 {
                Outcome::Declined(format!(
                    "OWNER_LIMIT: {} sessions were refused by their new node (their owners \
                     are at its session limit); they stay on their old node",
                    pass.refused
                ))
            } else {
                eprintln!("nothing left to move: the previous topology can be dropped");
                Outcome::Done
            });
        }
        progress = Progress::start(&from, &to, progress.pass + 1, total.into());
        progress.save(&options.progress)?;
    }
}

fn report_line(progress: &Progress, source: usize, elapsed: Duration) {
    let c = progress.this_pass;
    let node = progress.source.get(source).map_or("-", |s| s.name.as_str());
    eprintln!(
        "pass {} node {} cursor {} | scanned {} moved {} changed {} ended {} refused {} | {:.1}s",
        progress.pass,
        node,
        progress.source.get(source).map_or(0, |s| s.cursor),
        c.scanned,
        c.moved,
        c.changed,
        c.ended,
        c.refused,
        elapsed.as_secs_f64()
    );
}

/// Settles the moves an interrupted run left pending (unless its journal says they were
/// settled), before anything else, and records that they are: until then, a copy of a
/// session a logout ended may be on its new node.
async fn settle(
    rebalance: &Rebalance,
    progress: &mut Progress,
    path: &Path,
    journal: &mut Journal,
) -> anyhow::Result<()> {
    let settled = Journal::settled(path, progress.batch)?;
    progress.pending.retain(|p| !settled.contains(&p.key));
    if progress.pending.is_empty() {
        progress.save(path)?;
        return journal
            .clear()
            .with_context(|| format!("cannot clear {}", Journal::path(path).display()));
    }
    let (count, mut removed) = (progress.pending.len(), 0);
    while let Some(recorded) = progress.pending.last() {
        let pending = recorded
            .decode()
            .with_context(|| format!("{}", path.display()))?;
        match rebalance.settle(&pending).await {
            Ok(existed) => removed += usize::from(existed),
            Err(e) => {
                progress.save(path)?;
                return Err(e).with_context(|| {
                    format!(
                        "cannot settle a move an interrupted run left pending (node {}); \
                         {} remain in {}",
                        pending.target,
                        progress.pending.len(),
                        path.display()
                    )
                });
            }
        }
        progress.pending.pop();
    }
    progress.save(path)?;
    journal
        .clear()
        .with_context(|| format!("cannot clear {}", Journal::path(path).display()))?;
    eprintln!("settled {count} moves an interrupted run left pending: {removed} copies removed");
    Ok(())
}

/// Sleeps as long as keeps the scan at `rate` entries per second, after a batch of
/// `scanned` that took `took`.
async fn pace(rate: u64, scanned: u64, took: Duration) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(scanned as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(took) {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[[node]]\nname = \"a\"\naddr = \"h:1\"\n[[node]]\nname = \"b\"\naddr = \"h:2\"\n",
        )
        .unwrap();
        let topology = read_topology(&path).unwrap();
        assert_eq!(names(&topology), ["a", "b"]);
        for bad in [
            "[[node]]\nname = \"a\"\naddr = \"h:1\"\n[[node]]\nname = \"a\"\naddr = \"h:2\"\n",
            "[[node]]\nname = \"a\"\n",
            "[[node]]\nname = \"a\"\naddr = \"h:1\"\nport = 3\n",
            "node = []\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_topology(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_crate_writes_topology_files_this_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let topology = Topology::new([
            Node::new("odd\"name\\", "h:1").unwrap(),
            Node::new("sessiond-1", "sessiond-1.sessiond:7878").unwrap(),
        ])
        .unwrap();
        let text = sessiond_client::discovery::topology_toml(&topology);
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_topology(&path).unwrap(), topology);
    }

    #[test]
    fn progress_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.toml");
        let t = Topology::new([Node::new("a", "h:1").unwrap()]).unwrap();
        let mut progress = Progress::start(&t, &t, 2, Counts::default());
        progress.source[0].cursor = 17;
        progress.this_pass.moved = 5;
        let pending = Pending {
            target: "b".into(),
            key: vec![0, 0xff, b'k', 0x80],
            version: 9,
        };
        progress.pending.push((&pending).into());
        progress.save(&path).unwrap();
        let loaded = Progress::load(&path).unwrap().unwrap();
        assert_eq!(loaded.pending[0].key, "00ff6b80");
        assert_eq!(loaded.pending[0].decode().unwrap(), pending);
        assert_eq!(Progress::load(&path).unwrap(), Some(progress));
        assert!(!temporary(&path).exists());
        assert_eq!(Progress::load(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn the_journal_counts_whole_lines_of_its_batch_only() {
        let dir = tempfile::tempdir().unwrap();
        let progress = dir.path().join("progress.toml");
        let mut journal = Journal::open(&progress).unwrap();
        journal.append(6, b"old").unwrap();
        journal.append(7, &[0, 0xff]).unwrap();
        journal.append(7, b"k").unwrap();
        // A process killed in the middle of a line.
        journal.file.write_all(b"7 6c").unwrap();
        let settled = Journal::settled(&progress, 7).unwrap();
        assert_eq!(
            settled,
            HashSet::from(["00ff".to_string(), "6b".to_string()])
        );
        journal.clear().unwrap();
        assert!(Journal::settled(&progress, 7).unwrap().is_empty());
        journal.append(8, b"k").unwrap();
        let settled = Journal::settled(&progress, 8).unwrap();
        assert_eq!(settled, HashSet::from(["6b".to_string()]));
    }

    #[test]
    fn a_pending_key_that_is_not_hexadecimal_is_an_error() {
        for key in ["0", "zz", "é0"] {
            let recorded = PendingMove {
                target: "b".into(),
                key: key.into(),
                version: 1,
            };
            assert!(recorded.decode().is_err(), "{key}");
        }
    }
}
