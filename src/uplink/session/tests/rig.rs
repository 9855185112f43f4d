//! The test rig: a fake backlog, a fake client that takes (or refuses) every request, packet
//! ids handed out in order as rumqttc's event loop would, and a clock moved by the test.

use super::super::*;
use crate::event::Stream;
use crate::uplink::schedule::{Backlog, Limits, Queued};
use crate::uplink::Inbound;
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub(super) struct Ev {
    seq: u64,
    at_ms: i64,
    json: Vec<u8>,
}

impl Queued for Ev {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn enqueued_ms(&self) -> i64 {
        self.at_ms
    }
}

impl Wire for Ev {
    fn json(&self) -> &[u8] {
        &self.json
    }
    fn ack_ref(&self) -> AckRef {
        AckRef {
            chunk: 0,
            seq: self.seq,
        }
    }
}

/// One stream's events: seq → (enqueue time, JSON).
pub(super) type Queue = BTreeMap<u64, (i64, Vec<u8>)>;

/// In-memory backlog: per stream, seq → (enqueue time, JSON); reads honour `max_bytes` like the
/// spool (at least one event).
#[derive(Default)]
pub(super) struct Mem {
    streams: RefCell<BTreeMap<Stream, Queue>>,
    appended: RefCell<BTreeMap<Stream, u64>>,
}

impl Mem {
    pub(super) fn push(&self, s: Stream, n: u64, at_ms: i64) {
        for _ in 0..n {
            let seq = self.appended(s);
            self.push_json(s, at_ms, format!("{{\"n\":{seq}}}").into_bytes());
        }
    }
    pub(super) fn push_json(&self, s: Stream, at_ms: i64, json: Vec<u8>) {
        let mut appended = self.appended.borrow_mut();
        let a = appended.entry(s).or_default();
        self.streams
            .borrow_mut()
            .entry(s)
            .or_default()
            .insert(*a, (at_ms, json));
        *a += 1;
    }
    pub(super) fn ack(&self, s: Stream, acks: &[AckRef]) {
        if let Some(q) = self.streams.borrow_mut().get_mut(&s) {
            for a in acks {
                q.remove(&a.seq);
            }
        }
    }
    pub(super) fn left(&self, s: Stream) -> Vec<u64> {
        let streams = self.streams.borrow();
        streams
            .get(&s)
            .map(|q| q.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl Backlog for Mem {
    type Item = Ev;
    fn appended(&self, s: Stream) -> u64 {
        self.appended.borrow().get(&s).copied().unwrap_or(0)
    }
    fn peek(&self, s: Stream, from: u64, max_events: usize, max_bytes: usize) -> Vec<Ev> {
        let streams = self.streams.borrow();
        let mut out: Vec<Ev> = Vec::new();
        let mut bytes = 0;
        for (&seq, (at_ms, json)) in streams.get(&s).into_iter().flat_map(|q| q.range(from..)) {
            if out.len() == max_events || (!out.is_empty() && bytes + json.len() > max_bytes) {
                break;
            }
            bytes += json.len();
            let (at_ms, json) = (*at_ms, json.clone());
            out.push(Ev { seq, at_ms, json });
        }
        out
    }
}

impl StatusSource for Mem {
    fn status(&self, store: &str, gateway: &str) -> Vec<u8> {
        format!("{{\"kind\":\"status\",\"store\":\"{store}\",\"gateway\":\"{gateway}\"}}").into()
    }
}

pub(super) const T0_MS: i64 = 1_000_000;
pub(super) const STATUS: &str = "storegw/v1/s1/g1/status";
pub(super) const CONFIG: &str = "storegw/v1/s1/g1/config/site";
pub(super) const CMD: &str = "storegw/v1/s1/g1/cmd";

pub(super) fn cfg() -> SessionConfig {
    SessionConfig {
        store: "s1".into(),
        gateway: "g1".into(),
        prefix: "storegw/v1".into(),
        limits: Limits {
            batch_max_events: 2,
            batch_max_bytes: 512,
            linger: Duration::ZERO,
            drain_rate: 0,
        },
        max_inflight: 4,
        status_interval: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(5),
        packet_limit: 1024,
        remote: Some(vec![CONFIG.into(), CMD.into()]),
    }
}

pub(super) fn local() -> SessionConfig {
    SessionConfig {
        remote: None,
        ..cfg()
    }
}

/// The session, its backlog, a clock and a fake client.
pub(super) struct Rig {
    pub(super) s: Session<Ev>,
    pub(super) b: Mem,
    pub(super) t0: Instant,
    pub(super) now: Instant,
    /// The client refuses every request (its request channel is full).
    pub(super) refuse: bool,
    /// Publishes taken by the client and not yet written by the event loop.
    pub(super) unwritten: usize,
    pub(super) next_pkid: u16,
}

impl Rig {
    pub(super) fn new(cfg: SessionConfig) -> Rig {
        Rig::with(cfg, Mem::default())
    }
    pub(super) fn with(cfg: SessionConfig, b: Mem) -> Rig {
        let t0 = Instant::now();
        Rig {
            s: Session::new(cfg, t0),
            b,
            t0,
            now: t0,
            refuse: false,
            unwritten: 0,
            next_pkid: 1,
        }
    }
    pub(super) fn at(&mut self, ms: u64) {
        self.now = self.t0 + Duration::from_millis(ms);
    }
    pub(super) fn wall_ms(&self) -> i64 {
        T0_MS + self.now.duration_since(self.t0).as_millis() as i64
    }
    pub(super) fn connect(&mut self) -> Vec<Action> {
        self.feed(Input::Connected {
            session_present: false,
        })
    }
    /// One input, then every action it leads to, carried out as the I/O loop would.
    pub(super) fn feed(&mut self, input: Input) -> Vec<Action> {
        self.s.handle(input, self.now);
        let mut out = Vec::new();
        while let Some(a) = self.s.poll(&self.b, self.now, self.wall_ms()) {
            match &a {
                Action::Publish(_) | Action::Subscribe(_) | Action::Disconnect => {
                    let reply = if self.refuse {
                        Input::Refused("request channel full".into())
                    } else {
                        self.unwritten += usize::from(matches!(a, Action::Publish(_)));
                        Input::Accepted
                    };
                    self.s.handle(reply, self.now);
                }
                Action::Ack { stream, acks, .. } | Action::Drop { stream, acks, .. } => {
                    self.b.ack(*stream, acks)
                }
                _ => {}
            }
            out.push(a);
        }
        out
    }
    /// The event loop writes every publish taken so far: their packet ids, in order.
    pub(super) fn write(&mut self) -> Vec<u16> {
        let pkids: Vec<u16> = (0..std::mem::take(&mut self.unwritten))
            .map(|i| self.next_pkid + i as u16)
            .collect();
        for &pkid in &pkids {
            self.s.handle(Input::PublishSent(pkid), self.now);
        }
        self.next_pkid += pkids.len() as u16;
        pkids
    }
}

pub(super) fn publishes(acts: &[Action]) -> Vec<&Publish> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// The `n` of each event in a batch payload.
pub(super) fn seqs(p: &Publish) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
    let events = v["events"].as_array().cloned().unwrap_or_default();
    events.iter().filter_map(|e| e["n"].as_u64()).collect()
}

pub(super) fn acked(acts: &[Action]) -> Vec<u64> {
    acts.iter()
        .flat_map(|a| match a {
            Action::Ack { acks, .. } => acks.iter().map(|a| a.seq).collect(),
            _ => Vec::new(),
        })
        .collect()
}

pub(super) fn to_agent(acts: &[Action]) -> Vec<(&Inbound, Delivery)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Agent { msg, delivery } => Some((msg, *delivery)),
            _ => None,
        })
        .collect()
}
