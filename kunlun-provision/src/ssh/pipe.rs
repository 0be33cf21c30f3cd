//! Streaming one machine's command output into another machine's command (`src | dst`, with
//! the manager relaying the bytes between two SSH sessions): the bounded [`ByteQueue`] between
//! the two blocking workers, and [`Piped`], what both sides did.
//!
//! Why through the manager: the machines hold no keys for each other, and the manager's host
//! key policy (known_hosts, pins) applies to both legs.
//!
//! Invariants:
//! - at most [`QUEUE_BYTES`] (plus one chunk) are held in memory, so a slow receiver slows the
//!   sender down instead of filling the manager's memory; an optional rate limit paces the
//!   sender the same way;
//! - the receiving command gets EOF only after the sending command exited 0; if the sender
//!   fails (non-zero exit, transport error, deadline) the receiving command is killed rather
//!   than given a truncated stream, and if the receiver ends first the sender is killed;
//! - every wait on the queue is bounded (`POLL`), so both workers keep honouring their
//!   deadlines and keep reading their commands' stderr.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::output::Output;

/// Bytes the relay holds at most between the two sessions.
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Longest single wait of a worker on the queue, so it rechecks its deadline and its channel.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// What both sides of a pipe did. `source.stdout` is empty: it went to `sink`'s stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piped {
    pub source: Output,
    pub sink: Output,
    /// Bytes relayed from the source's stdout to the sink's stdin.
    pub bytes: u64,
}

impl Piped {
    /// Both commands exited 0.
    pub fn success(&self) -> bool {
        self.source.success() && self.sink.success()
    }

    /// `Ok(self)` when both exited 0, else the failed side's [`Output::checked`] error (the
    /// source's first: a sink that failed because its input was cut is the consequence).
    pub fn checked(self) -> crate::Result<Piped> {
        let Piped {
            source,
            sink,
            bytes,
        } = self;
        let source = source.checked()?;
        let sink = sink.checked()?;
        Ok(Piped {
            source,
            sink,
            bytes,
        })
    }
}

/// How the sending side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    Open,
    /// The stream is complete: the sending command exited 0.
    Complete,
    /// The sending side failed: whatever was queued is not a whole stream.
    Aborted,
}

#[derive(Debug)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    writer: WriterEnd,
    reader_gone: bool,
    /// Bytes accepted so far, and since when (for the rate limit).
    pushed: u64,
    started: Option<Instant>,
}

/// What [`ByteQueue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// No room (or over the rate) within the wait: the chunk is handed back.
    Full(Vec<u8>),
    /// The receiving side ended: nothing more will be read.
    ReaderGone,
}

/// What [`ByteQueue::pop`] got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pop {
    Chunk(Vec<u8>),
    /// Nothing within the wait.
    Empty,
    /// The stream is complete and fully read.
    End,
    /// The sending side failed.
    Aborted,
}

/// A bounded byte queue between one writer and one reader thread.
#[derive(Debug)]
pub(crate) struct ByteQueue {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
    /// Bytes per second the writer may push at most.
    rate: Option<u64>,
}

impl ByteQueue {
    pub(crate) fn new(capacity: usize, rate: Option<u64>) -> ByteQueue {
        ByteQueue {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                queued: 0,
                writer: WriterEnd::Open,
                reader_gone: false,
                pushed: 0,
                started: None,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
            rate: rate.filter(|r| *r > 0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the writer must still wait before `len` more bytes keep it within the rate.
    fn rate_wait(&self, s: &State, len: usize) -> Duration {
        let (Some(rate), Some(t0)) = (self.rate, s.started) else {
            return Duration::ZERO;
        };
        let allowed_at = Duration::from_secs_f64((s.pushed + len as u64) as f64 / rate as f64);
        allowed_at.saturating_sub(t0.elapsed())
    }

    /// Queues `chunk`, waiting at most `wait` for room (and for the rate limit).
    pub(crate) fn push(&self, chunk: Vec<u8>, wait: Duration) -> Push {
        let until = Instant::now() + wait;
        let mut s = self.lock();
        s.started.get_or_insert_with(Instant::now);
        loop {
            if s.reader_gone {
                return Push::ReaderGone;
            }
            let room = s.queued == 0 || s.queued + chunk.len() <= self.capacity;
            let pace = self.rate_wait(&s, chunk.len());
            if room && pace.is_zero() {
                s.queued += chunk.len();
                s.pushed += chunk.len() as u64;
                s.chunks.push_back(chunk);
                self.changed.notify_all();
                return Push::Queued;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Push::Full(chunk);
            }
            let nap = if room { pace.min(left) } else { left };
            s = self
                .changed
                .wait_timeout(s, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Takes the next chunk, waiting at most `wait`.
    pub(crate) fn pop(&self, wait: Duration) -> Pop {
        let until = Instant::now() + wait;
        let mut s = self.lock();
        loop {
            if s.writer == WriterEnd::Aborted {
                return Pop::Aborted;
            }
            if let Some(c) = s.chunks.pop_front() {
                s.queued -= c.len();
                self.changed.notify_all();
                return Pop::Chunk(c);
            }
            if s.writer == WriterEnd::Complete {
                return Pop::End;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Pop::Empty;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The writer is done: `complete` when its command exited 0. Only the first call counts.
    pub(crate) fn close_writer(&self, complete: bool) {
        let mut s = self.lock();
        if s.writer == WriterEnd::Open {
            s.writer = if complete {
                WriterEnd::Complete
            } else {
                WriterEnd::Aborted
            };
            if !complete {
                s.chunks.clear();
                s.queued = 0;
            }
            self.changed.notify_all();
        }
    }

    /// The reader reads no more (its command ended or failed).
    pub(crate) fn close_reader(&self) {
        let mut s = self.lock();
        s.reader_gone = true;
        s.chunks.clear();
        s.queued = 0;
        self.changed.notify_all();
    }

    /// Bytes the writer queued so far.
    pub(crate) fn pushed(&self) -> u64 {
        self.lock().pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn chunks_arrive_in_order_and_the_end_only_after_a_complete_close() {
        let q = ByteQueue::new(1024, None);
        assert_eq!(q.push(b"ab".to_vec(), Duration::ZERO), Push::Queued);
        assert_eq!(q.push(b"cd".to_vec(), Duration::ZERO), Push::Queued);
        assert_eq!(q.pop(Duration::ZERO), Pop::Chunk(b"ab".to_vec()));
        assert_eq!(q.pop(Duration::ZERO), Pop::Chunk(b"cd".to_vec()));
        assert_eq!(q.pop(Duration::ZERO), Pop::Empty);
        q.close_writer(true);
        q.close_writer(false);
        assert_eq!(q.pop(Duration::ZERO), Pop::End, "the first close counts");
        assert_eq!(q.pushed(), 4);
    }

    #[test]
    fn an_aborted_writer_is_never_read_as_a_whole_stream() {
        let q = ByteQueue::new(1024, None);
        assert_eq!(q.push(b"partial".to_vec(), Duration::ZERO), Push::Queued);
        q.close_writer(false);
        assert_eq!(q.pop(Duration::ZERO), Pop::Aborted);
    }

    #[test]
    fn a_full_queue_hands_the_chunk_back_and_a_gone_reader_stops_the_writer() {
        let q = ByteQueue::new(4, None);
        assert_eq!(q.push(b"abc".to_vec(), Duration::ZERO), Push::Queued);
        assert_eq!(
            q.push(b"de".to_vec(), Duration::from_millis(5)),
            Push::Full(b"de".to_vec())
        );
        q.close_reader();
        assert_eq!(q.push(b"de".to_vec(), Duration::ZERO), Push::ReaderGone);
    }

    #[test]
    fn a_chunk_larger_than_the_queue_still_passes_alone() {
        let q = ByteQueue::new(4, None);
        assert_eq!(q.push(vec![0; 10], Duration::ZERO), Push::Queued);
        assert_eq!(q.pop(Duration::ZERO), Pop::Chunk(vec![0; 10]));
    }

    #[test]
    fn a_blocked_writer_goes_on_once_the_reader_takes_a_chunk() {
        let q = Arc::new(ByteQueue::new(4, None));
        assert_eq!(q.push(b"abcd".to_vec(), Duration::ZERO), Push::Queued);
        let r = q.clone();
        let reader = std::thread::spawn(move || loop {
            if let Pop::Chunk(c) = r.pop(Duration::from_secs(5)) {
                return c;
            }
        });
        // Waits (bounded) until the reader made room.
        let mut chunk = b"ef".to_vec();
        loop {
            match q.push(chunk, Duration::from_millis(50)) {
                Push::Queued => break,
                Push::Full(c) => chunk = c,
                Push::ReaderGone => panic!("the reader is there"),
            }
        }
        assert_eq!(reader.join().unwrap(), b"abcd".to_vec());
        assert_eq!(q.pop(Duration::ZERO), Pop::Chunk(b"ef".to_vec()));
    }

    #[test]
    fn the_rate_limit_holds_the_writer_back() {
        // 1000 bytes per second: the second 1000-byte chunk is not accepted at once.
        let q = ByteQueue::new(1 << 20, Some(1000));
        assert_eq!(
            q.push(vec![0; 1000], Duration::ZERO),
            Push::Full(vec![0; 1000])
        );
        let q = ByteQueue::new(1 << 20, Some(1_000_000));
        assert_eq!(q.push(vec![0; 10], Duration::from_secs(5)), Push::Queued);
    }
}
