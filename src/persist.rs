//! The state writer: a thread that owns the state file and does every slow
//! disk operation of the daemon (write temp, fsync, rename, fsync dir; the
//! state-directory probe), so that the event loop never blocks on a disk.
//!
//! Writes are coalesced by `Coalescer`, which the simulator drives too
//! (tests/sim `persist`/`start_write`): at most one write is in flight;
//! states asked for meanwhile collapse into the newest; when a write finishes the next one
//! starts, then the finished one is reported. The loop learns of a result
//! through a `mio::Waker` and stamps it with a fresh clock reading.
//!
//! Architecture Invariant: this module decides nothing about the protocol.
//! It stores what the core asked for and reports what happened; the core
//! holds every Claim and Ack until it hears `Persisted`. It reads no clock.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use crate::core::{Epoch, Persisted};
use crate::state::{StateFile, Stored};

/// The coalescing rule, without the thread: which write to start when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coalescer {
    /// The state being written now.
    in_flight: Option<Persisted>,
    /// The newest state asked for while one was in flight.
    next: Option<Persisted>,
}

impl Coalescer {
    /// A state is asked for; returns the write to start now, if any. The
    /// core asks in order and never lowers its promise, so the newest
    /// request holds everything the ones before it did.
    pub fn request(&mut self, p: Persisted) -> Option<Persisted> {
        if self.in_flight.is_some() {
            let promised = self
                .next
                .as_ref()
                .map_or(p.promised, |n| n.promised.max(p.promised));
            self.next = Some(Persisted { promised, ..p });
            None
        } else {
            self.in_flight = Some(p.clone());
            Some(p)
        }
    }

    /// The write in flight finished; returns it and the write to start now.
    /// `None` for the first if no write was in flight (a stray completion).
    pub fn complete(&mut self) -> (Option<Persisted>, Option<Persisted>) {
        let done = self.in_flight.take();
        let start = self.next.take();
        self.in_flight = start.clone();
        (done, start)
    }

    /// Whether a write is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Job {
    /// Store this state (with the incarnation), unless already stored.
    Write(Persisted),
    /// Check the state directory: store `retry` if it differs from what is
    /// stored (a write that failed before), then write, sync and remove a
    /// probe file.
    Probe {
        /// The state to store again, if the last write failed.
        retry: Option<Persisted>,
    },
}

/// What the writer thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// A write finished.
    Written {
        /// The promise asked for.
        promised: Epoch,
        /// `Err` with the reason if it did not reach the disk.
        result: Result<(), String>,
    },
    /// A probe finished.
    Probed {
        /// `Err` with the reason if the directory cannot be written.
        result: Result<(), String>,
    },
}

/// The event loop's handle on the writer thread.
#[derive(Debug)]
pub struct Writer {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    coalescer: Coalescer,
    probing: bool,
    dir: PathBuf,
}

impl Writer {
    /// Starts the writer thread with the state file (already holding this
    /// run's incarnation). `waker` is woken after each result.
    pub fn spawn(
        state: StateFile,
        incarnation: u64,
        dir: PathBuf,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Writer> {
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name("regent-state".to_string())
            .spawn(move || work(state, incarnation, &thread_dir, &job_rx, &done_tx, &waker))?;
        Ok(Writer {
            jobs,
            done,
            coalescer: Coalescer::default(),
            probing: false,
            dir,
        })
    }

    /// Asks for `p` to be made durable; `Done::Written` follows.
    pub fn persist(&mut self, p: Persisted) {
        if let Some(p) = self.coalescer.request(p) {
            self.send(Job::Write(p));
        }
    }

    /// Starts a probe of the state directory unless one is under way;
    /// `Done::Probed` follows. False if one was under way.
    pub fn probe(&mut self, retry: Option<Persisted>) -> bool {
        if self.probing {
            return false;
        }
        self.probing = true;
        self.send(Job::Probe { retry });
        true
    }

    /// The next result, if one is waiting. Starts the next coalesced write
    /// before handing back a finished one, as the simulator does.
    pub fn poll_done(&mut self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        match &done {
            Done::Written { .. } => {
                if let (_, Some(next)) = self.coalescer.complete() {
                    self.send(Job::Write(next));
                }
            }
            Done::Probed { .. } => self.probing = false,
        }
        Some(done)
    }

    /// The state directory, for logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, job: Job) {
        // The thread ends only when this handle is dropped (its receiver
        // then fails), so a send cannot fail while the loop runs; if the
        // thread died anyway, the promise is never reported and the core
        // keeps holding its Claim or Ack, which is safe.
        if self.jobs.send(job).is_err() {
            log::error!("the state writer thread is gone: promises can no longer be stored");
        }
    }
}

/// The writer thread: one job at a time, in order.
fn work(
    mut state: StateFile,
    incarnation: u64,
    dir: &Path,
    jobs: &Receiver<Job>,
    done: &Sender<Done>,
    waker: &mio::Waker,
) {
    let mut store = |p: Persisted| -> Result<(), String> {
        let stored = state.stored();
        // An unconfirmed list leaves the last confirmed one on disk.
        let membership = p.membership.clone().or(stored.membership.clone());
        if p.promised <= stored.promised
            && p.leader == stored.leader
            && membership == stored.membership
        {
            return Ok(());
        }
        state
            .store(Stored {
                promised: p.promised.max(stored.promised),
                incarnation,
                leader: p.leader,
                membership,
            })
            .map_err(|e| e.to_string())
    };
    while let Ok(job) = jobs.recv() {
        let result = match job {
            Job::Write(p) => Done::Written {
                promised: p.promised,
                result: store(p),
            },
            Job::Probe { retry } => Done::Probed {
                result: retry
                    .map_or(Ok(()), &mut store)
                    .and_then(|()| probe_dir(dir).map_err(|e| e.to_string())),
            },
        };
        if done.send(result).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            log::error!("cannot wake the event loop after a state write: {e}");
        }
    }
}

/// Writes, syncs and removes a small file in `dir`.
///
/// The file's name is this probe's own: daemons of several clusters share
/// a state directory (the regent@ units do), and with one name a leader's
/// probe could remove the file another was about to remove, which made that
/// one see its directory as unwritable and resign.
pub fn probe_dir(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".regent-probe.{}.{n}", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    f.write_all(b"probe\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(promised: u64) -> Persisted {
        Persisted {
            promised: Epoch(promised),
            leader: None,
            membership: None,
        }
    }

    #[test]
    fn one_write_in_flight_and_the_rest_collapse_into_the_newest() {
        let mut c = Coalescer::default();
        assert_eq!(c.request(p(1)), Some(p(1)), "idle: starts at once");
        assert!(c.busy());
        assert_eq!(c.request(p(3)), None);
        let followed = Persisted {
            leader: Some((crate::core::NodeId(2), Epoch(2))),
            ..p(2)
        };
        assert_eq!(c.request(followed.clone()), None);
        let newest = Persisted {
            promised: Epoch(3),
            ..followed
        };
        assert_eq!(
            c.complete(),
            (Some(p(1)), Some(newest.clone())),
            "the highest promise, with the newest leader followed"
        );
        assert!(c.busy(), "the collapsed write is in flight");
        assert_eq!(c.complete(), (Some(newest), None));
        assert!(!c.busy());
        assert_eq!(c.complete(), (None, None), "a stray completion");
        assert_eq!(c.request(p(4)), Some(p(4)));
    }

    #[test]
    fn probe_dir_fails_where_a_file_blocks_the_path() {
        let base = std::env::temp_dir().join(format!("regent-probe-{}", std::process::id()));
        std::fs::create_dir_all(&base).expect("temp dir");
        assert!(probe_dir(&base).is_ok());
        let file = base.join("file");
        std::fs::write(&file, b"x").expect("file");
        assert!(probe_dir(&file.join("sub")).is_err());
        std::fs::remove_dir_all(&base).expect("cleanup");
    }

    /// Two probers of one directory (two daemons sharing a state dir) never
    /// fail each other's probes.
    #[test]
    fn concurrent_probes_of_one_dir_all_succeed() {
        let base = std::env::temp_dir().join(format!("regent-probes-{}", std::process::id()));
        std::fs::create_dir_all(&base).expect("temp dir");
        let _cleanup = TempDir(base.clone());
        let probers: Vec<_> = (0..2)
            .map(|_| {
                let dir = base.clone();
                std::thread::spawn(move || (0..500).filter(|_| probe_dir(&dir).is_err()).count())
            })
            .collect();
        for p in probers {
            assert_eq!(p.join().expect("prober"), 0, "failed probes");
        }
        let left = std::fs::read_dir(&base).expect("read dir").count();
        assert_eq!(left, 0, "probe files left behind");
    }

    struct TempDir(PathBuf);
    impl std::ops::Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn wait(w: &mut Writer, poll: &mut mio::Poll) -> Done {
        let mut events = mio::Events::with_capacity(4);
        for _ in 0..100 {
            if let Some(d) = w.poll_done() {
                return d;
            }
            let _ = poll.poll(&mut events, Some(Duration::from_millis(50)));
        }
        panic!("no result from the writer thread");
    }

    #[test]
    fn the_thread_writes_coalesces_and_probes() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("regent-writer-{}", std::process::id())));
        let node = crate::core::NodeId(1);
        let state = StateFile::create(&dir.0, "c", node, Stored::default()).expect("create");
        let mut poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(9)).expect("waker"));
        let mut w = Writer::spawn(state, 7, dir.0.clone(), waker).expect("spawn");
        w.persist(p(1));
        w.persist(p(2));
        w.persist(p(5));
        let mut reported = Vec::new();
        while reported.last() != Some(&Epoch(5)) {
            match wait(&mut w, &mut poll) {
                Done::Written { promised, result } => {
                    assert_eq!(result, Ok(()));
                    reported.push(promised);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            reported.len() <= 2,
            "at most the first and the newest: {reported:?}"
        );
        let (_, stored) = StateFile::open(&dir.0, "c", node).expect("reopen");
        assert_eq!(
            stored,
            Stored {
                promised: Epoch(5),
                incarnation: 7,
                leader: None,
                membership: None,
            }
        );
        assert!(w.probe(None));
        assert!(!w.probe(None), "one probe at a time");
        assert_eq!(wait(&mut w, &mut poll), Done::Probed { result: Ok(()) });
        assert!(w.probe(Some(p(6))));
        assert_eq!(wait(&mut w, &mut poll), Done::Probed { result: Ok(()) });
        let (_, stored) = StateFile::open(&dir.0, "c", node).expect("reopen");
        assert_eq!(stored.promised, Epoch(6), "a probe retries the promise");
    }
}
