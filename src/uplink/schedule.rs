//! What to publish next: per-stream cursors, linger, round-robin across streams and the drain
//! rate, with no I/O. The session asks [`Scheduler::next`] for a batch while it has in-flight
//! room, publishes it, and reports back with [`Scheduler::published`]; when nothing is due the
//! scheduler says when to ask again. See docs/design.md, "Uplink".
//!
//! Rules, in the order they are applied to the stream whose turn it is:
//! - **Cursor.** Each stream has a cursor: the first seq not yet handed out in this session.
//!   It starts at 0 on every connection, so after a reconnect everything still in the spool
//!   (that is, not yet acknowledged) is read again from the oldest event.
//! - **Linger.** A batch smaller than `batch_max_events` whose oldest event is younger than
//!   `linger` is held back until the linger runs out. While held, the stream is not read again
//!   unless enough events were appended since to fill a batch (reading it on every wake-up cost
//!   more than publishing at full load).
//! - **Round-robin.** Streams take turns in [`Stream::ALL`] order; a stream with nothing to send
//!   passes its turn. The turn moves on only after a publish, so a stream whose publish was
//!   refused or rate-limited is asked first next time.
//! - **Drain rate.** With `drain_rate > 0`, a token bucket (burst: one batch or one second of
//!   rate, whichever is larger) caps events per second; a batch that does not fit yields the
//!   time at which it will.

use crate::event::Stream;
use std::time::Duration;
use tokio::time::Instant;

const STREAMS: usize = Stream::ALL.len();

/// One queued event as the scheduler sees it: enough to move the cursor and judge linger.
pub trait Queued {
    /// Spool sequence number (strictly increasing within a stream).
    fn seq(&self) -> u64;
    /// Wall-clock milliseconds at which the event entered the spool.
    fn enqueued_ms(&self) -> i64;
}

impl Queued for crate::spool::Spooled {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn enqueued_ms(&self) -> i64 {
        self.enqueued_ms
    }
}

/// Read access to the unacknowledged events, so the scheduler can be driven by a spool or by a
/// test double.
pub trait Backlog {
    /// What one read returns per event.
    type Item: Queued;
    /// Events ever appended to `stream`; only its growth matters (lingering streams).
    fn appended(&self, stream: Stream) -> u64;
    /// Up to `max_events` / `max_bytes` unacknowledged events with seq >= `from`, oldest
    /// first. A read error is the implementation's to report; it returns no events then.
    fn peek(
        &self,
        stream: Stream,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Vec<Self::Item>;
}

impl Backlog for crate::spool::Spool {
    type Item = crate::spool::Spooled;
    fn appended(&self, stream: Stream) -> u64 {
        crate::spool::Spool::appended(self, stream)
    }
    fn peek(
        &self,
        stream: Stream,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Vec<Self::Item> {
        crate::spool::Spool::peek(self, stream, from, max_events, max_bytes).unwrap_or_else(|e| {
            tracing::error!(error = %e, "spool read failed");
            Vec::new()
        })
    }
}

/// The batching knobs of `[mqtt]` the scheduler applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events in one batch (`mqtt.batch_max_events`); a full batch does not linger.
    pub batch_max_events: usize,
    /// Most bytes of event JSON in one batch (`mqtt.batch_max_bytes`); a larger event goes alone.
    pub batch_max_bytes: usize,
    /// How long a batch that is not full may wait for more (`mqtt.linger`), from its oldest event.
    pub linger: Duration,
    /// Events per second; 0 means unlimited.
    pub drain_rate: u32,
}

/// Events of one stream to publish as one MQTT message.
#[derive(Debug)]
pub struct Batch<T> {
    /// The stream whose topic the batch goes to and whose spool holds its events.
    pub stream: Stream,
    /// Unacknowledged events from the stream's cursor on, oldest first, within the limits.
    pub events: Vec<T>,
}

/// What the session should do next.
#[derive(Debug)]
pub enum Step<T> {
    /// Publish this batch, then call [`Scheduler::published`] if the client accepted it.
    Publish(Batch<T>),
    /// Nothing is due: ask again at this time (a linger or the drain rate runs out), or when
    /// events are appended if `None`.
    Wait(Option<Instant>),
}

/// A stream held back by linger: until when, and what it looked like then.
#[derive(Debug, Clone, Copy)]
struct Linger {
    until: Instant,
    appended: u64,
    seen: usize,
}

/// Token bucket for `mqtt.drain_rate`.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    burst: f64,
    at: Instant,
}

impl RateLimit {
    /// `None` if `n` events may go now (and takes their tokens), else how long until they may.
    fn allow(&mut self, n: usize, now: Instant) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        self.tokens = (self.tokens
            + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.burst);
        self.at = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            None
        } else {
            Some(Duration::from_secs_f64(
                (n as f64 - self.tokens) / self.rate,
            ))
        }
    }
}

/// Per-session publishing state; dropped with the connection, which is what makes a reconnect
/// resend from the oldest unacknowledged event.
#[derive(Debug)]
pub struct Scheduler {
    limits: Limits,
    /// Indexed like [`Stream::ALL`].
    cursor: [u64; STREAMS],
    lingering: [Option<Linger>; STREAMS],
    rr: usize,
    limiter: RateLimit,
    /// Earliest wake-up seen since the last [`Step::Wait`] or [`Scheduler::take_wake`].
    wake: Option<Instant>,
}

impl Scheduler {
    /// A fresh session's scheduler: cursors at the start of every stream, one batch of tokens.
    pub fn new(limits: Limits, now: Instant) -> Scheduler {
        Scheduler {
            limits,
            cursor: [0; STREAMS],
            lingering: [None; STREAMS],
            rr: 0,
            limiter: RateLimit {
                rate: limits.drain_rate as f64,
                tokens: limits.batch_max_events as f64,
                burst: limits.batch_max_events.max(limits.drain_rate as usize) as f64,
                at: now,
            },
            wake: None,
        }
    }

    /// Applies a reloaded `mqtt.drain_rate` without losing the tokens already earned.
    pub fn set_drain_rate(&mut self, rate: u32) {
        self.limits.drain_rate = rate;
        self.limiter.rate = rate as f64;
        self.limiter.burst = self.limits.batch_max_events.max(rate as usize) as f64;
    }

    /// The next batch due at `now` (`now_ms`: the wall clock, to age events), or when to ask
    /// again. Each call visits streams from the current turn until one has a batch due or all
    /// have passed.
    pub fn next<B: Backlog>(&mut self, backlog: &B, now: Instant, now_ms: i64) -> Step<B::Item> {
        let max_events = self.limits.batch_max_events;
        let mut idle = 0;
        while idle < STREAMS {
            let si = self.rr % STREAMS;
            let stream = Stream::ALL[si];
            if let Some(l) = self.lingering[si] {
                let grown = backlog.appended(stream).saturating_sub(l.appended) as usize;
                if now < l.until && l.seen + grown < max_events {
                    self.wake_at(l.until);
                    idle += 1;
                    self.rr += 1;
                    continue;
                }
                self.lingering[si] = None;
            }
            let appended = backlog.appended(stream);
            let events = backlog.peek(
                stream,
                self.cursor[si],
                max_events,
                self.limits.batch_max_bytes,
            );
            let Some(first) = events.first() else {
                idle += 1;
                self.rr += 1;
                continue;
            };
            let age =
                Duration::from_millis(now_ms.saturating_sub(first.enqueued_ms()).max(0) as u64);
            if events.len() < max_events && age < self.limits.linger {
                let until = now + (self.limits.linger - age);
                self.wake_at(until);
                self.lingering[si] = Some(Linger {
                    until,
                    appended,
                    seen: events.len(),
                });
                idle += 1;
                self.rr += 1;
                continue;
            }
            if let Some(wait) = self.limiter.allow(events.len(), now) {
                self.wake_at(now + wait);
                break;
            }
            return Step::Publish(Batch { stream, events });
        }
        Step::Wait(self.wake.take())
    }

    /// The client accepted `batch`: its stream's cursor moves past it and the turn moves on.
    pub fn published<T: Queued>(&mut self, batch: &Batch<T>) {
        let si = slot(batch.stream);
        if let Some(last) = batch.events.last() {
            self.cursor[si] = last.seq() + 1;
        }
        self.rr += 1;
    }

    /// The wake-up collected so far, for a session that stopped asking before a
    /// [`Step::Wait`] (no in-flight room, or the client refused a publish).
    pub fn take_wake(&mut self) -> Option<Instant> {
        self.wake.take()
    }

    fn wake_at(&mut self, at: Instant) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }
}

/// Position of `stream` in [`Stream::ALL`], the scheduler's index.
fn slot(stream: Stream) -> usize {
    Stream::ALL.iter().position(|s| *s == stream).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq)]
    struct Ev {
        seq: u64,
        at_ms: i64,
    }

    impl Queued for Ev {
        fn seq(&self) -> u64 {
            self.seq
        }
        fn enqueued_ms(&self) -> i64 {
            self.at_ms
        }
    }

    /// In-memory backlog: per stream, seq → enqueue time; counts reads per stream.
    #[derive(Default)]
    struct Mem {
        streams: RefCell<BTreeMap<&'static str, BTreeMap<u64, i64>>>,
        appended: RefCell<BTreeMap<&'static str, u64>>,
        reads: RefCell<BTreeMap<&'static str, usize>>,
    }

    impl Mem {
        fn push(&self, s: Stream, n: u64, at_ms: i64) {
            let mut streams = self.streams.borrow_mut();
            let q = streams.entry(s.as_str()).or_default();
            let mut appended = self.appended.borrow_mut();
            let a = appended.entry(s.as_str()).or_default();
            for _ in 0..n {
                q.insert(*a, at_ms);
                *a += 1;
            }
        }
        fn ack(&self, s: Stream, seqs: impl IntoIterator<Item = u64>) {
            if let Some(q) = self.streams.borrow_mut().get_mut(s.as_str()) {
                for seq in seqs {
                    q.remove(&seq);
                }
            }
        }
        fn reads(&self, s: Stream) -> usize {
            self.reads.borrow().get(s.as_str()).copied().unwrap_or(0)
        }
    }

    impl Backlog for Mem {
        type Item = Ev;
        fn appended(&self, s: Stream) -> u64 {
            self.appended.borrow().get(s.as_str()).copied().unwrap_or(0)
        }
        fn peek(&self, s: Stream, from: u64, max_events: usize, _max_bytes: usize) -> Vec<Ev> {
            *self.reads.borrow_mut().entry(s.as_str()).or_default() += 1;
            self.streams
                .borrow()
                .get(s.as_str())
                .map(|q| {
                    q.range(from..)
                        .take(max_events)
                        .map(|(&seq, &at_ms)| Ev { seq, at_ms })
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    const T0_MS: i64 = 1_000_000;

    fn limits(max: usize, linger_ms: u64, rate: u32) -> Limits {
        Limits {
            batch_max_events: max,
            batch_max_bytes: 1 << 20,
            linger: Duration::from_millis(linger_ms),
            drain_rate: rate,
        }
    }

    fn publish(s: &mut Scheduler, b: &Mem, now: Instant, now_ms: i64) -> Option<Batch<Ev>> {
        match s.next(b, now, now_ms) {
            Step::Publish(batch) => {
                s.published(&batch);
                Some(batch)
            }
            Step::Wait(_) => None,
        }
    }

    fn seqs(b: &Batch<Ev>) -> Vec<u64> {
        b.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn empty_backlog_waits_for_appends() {
        let now = Instant::now();
        let mut s = Scheduler::new(limits(10, 0, 0), now);
        assert!(matches!(
            s.next(&Mem::default(), now, T0_MS),
            Step::Wait(None)
        ));
    }

    #[test]
    fn full_batches_go_at_once_and_cursor_moves_past_them() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Pos, 25, T0_MS);
        let mut s = Scheduler::new(limits(10, 60_000, 0), now);
        let first = publish(&mut s, &b, now, T0_MS).expect("full batch is due");
        assert_eq!(first.stream, Stream::Pos);
        assert_eq!(seqs(&first), (0..10).collect::<Vec<_>>());
        let second = publish(&mut s, &b, now, T0_MS).expect("second full batch");
        assert_eq!(seqs(&second), (10..20).collect::<Vec<_>>());
        // Nothing acknowledged yet, but the cursor keeps the same events from going twice; the
        // 5 left over are a partial batch and linger.
        assert!(matches!(s.next(&b, now, T0_MS), Step::Wait(Some(_))));
    }

    #[test]
    fn partial_batch_lingers_until_its_oldest_event_is_old_enough() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Ble, 3, T0_MS);
        let mut s = Scheduler::new(limits(10, 500, 0), now);
        // 200 ms old: 300 ms of linger left.
        match s.next(&b, now, T0_MS + 200) {
            Step::Wait(Some(at)) => assert_eq!(at, now + Duration::from_millis(300)),
            other => panic!("expected a wake time, got {other:?}"),
        }
        let later = now + Duration::from_millis(300);
        let batch = publish(&mut s, &b, later, T0_MS + 500).expect("linger ran out");
        assert_eq!(seqs(&batch), vec![0, 1, 2]);
    }

    #[test]
    fn lingering_stream_is_not_reread_until_it_could_fill_a_batch() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Wifi, 3, T0_MS);
        let mut s = Scheduler::new(limits(10, 1_000, 0), now);
        assert!(matches!(s.next(&b, now, T0_MS), Step::Wait(Some(_))));
        assert_eq!(b.reads(Stream::Wifi), 1);
        b.push(Stream::Wifi, 6, T0_MS); // 9 < 10: still lingering, not read
        assert!(matches!(s.next(&b, now, T0_MS), Step::Wait(Some(_))));
        assert_eq!(b.reads(Stream::Wifi), 1);
        b.push(Stream::Wifi, 1, T0_MS); // 10: a full batch is possible, read and publish
        let batch = publish(&mut s, &b, now, T0_MS).expect("full batch");
        assert_eq!(batch.events.len(), 10);
        assert_eq!(b.reads(Stream::Wifi), 2);
    }

    #[test]
    fn streams_take_turns_in_priority_order() {
        let now = Instant::now();
        let b = Mem::default();
        for s in Stream::ALL {
            b.push(s, 4, T0_MS);
        }
        let mut s = Scheduler::new(limits(2, 0, 0), now);
        let order: Vec<Stream> = std::iter::from_fn(|| publish(&mut s, &b, now, T0_MS))
            .map(|b| b.stream)
            .collect();
        let mut expected = Vec::new();
        for _ in 0..2 {
            expected.extend(Stream::ALL);
        }
        assert_eq!(order, expected);
    }

    #[test]
    fn refused_publish_keeps_the_turn_and_the_cursor() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Pos, 2, T0_MS);
        b.push(Stream::Ble, 2, T0_MS);
        let mut s = Scheduler::new(limits(2, 0, 0), now);
        // The client refused the first batch (request channel full): not reported as published.
        let Step::Publish(refused) = s.next(&b, now, T0_MS) else {
            panic!("batch expected")
        };
        let again = publish(&mut s, &b, now, T0_MS).expect("same batch again");
        assert_eq!(
            (again.stream, seqs(&again)),
            (refused.stream, seqs(&refused))
        );
    }

    #[test]
    fn drain_rate_paces_batches_and_says_when() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Pos, 40, T0_MS);
        // 10 events/s, batches of 10: the first batch uses the initial tokens.
        let mut s = Scheduler::new(limits(10, 0, 10), now);
        assert!(publish(&mut s, &b, now, T0_MS).is_some());
        match s.next(&b, now, T0_MS) {
            Step::Wait(Some(at)) => assert_eq!(at, now + Duration::from_secs(1)),
            other => panic!("expected a rate wait, got {other:?}"),
        }
        let later = now + Duration::from_secs(1);
        assert!(publish(&mut s, &b, later, T0_MS + 1_000).is_some());
        // Unlimited after a reload: the rest goes at once.
        s.set_drain_rate(0);
        assert!(publish(&mut s, &b, later, T0_MS + 1_000).is_some());
        assert!(publish(&mut s, &b, later, T0_MS + 1_000).is_some());
    }

    #[test]
    fn a_new_session_starts_again_from_the_oldest_unacknowledged_event() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Pos, 6, T0_MS);
        let mut s = Scheduler::new(limits(2, 0, 0), now);
        let a = publish(&mut s, &b, now, T0_MS).expect("batch");
        let _lost = publish(&mut s, &b, now, T0_MS).expect("batch");
        b.ack(a.stream, seqs(&a)); // only the first batch was acknowledged
                                   // Connection lost: the next session has a fresh scheduler.
        let mut s = Scheduler::new(limits(2, 0, 0), now);
        let resent = publish(&mut s, &b, now, T0_MS).expect("batch");
        assert_eq!(seqs(&resent), vec![2, 3]);
    }

    #[test]
    fn wake_is_the_earliest_of_all_lingering_streams() {
        let now = Instant::now();
        let b = Mem::default();
        b.push(Stream::Pos, 1, T0_MS - 900);
        b.push(Stream::Ble, 1, T0_MS - 100);
        let mut s = Scheduler::new(limits(10, 1_000, 0), now);
        match s.next(&b, now, T0_MS) {
            Step::Wait(Some(at)) => assert_eq!(at, now + Duration::from_millis(100)),
            other => panic!("expected a wake time, got {other:?}"),
        }
        assert!(s.take_wake().is_none(), "the wake was handed out once");
    }
}
