//! Which published batch a PUBACK acknowledges. See docs/design.md, "Uplink".
//!
//! # Pairing invariant
//!
//! rumqttc assigns the packet id (pkid) of a QoS 1 PUBLISH inside its event loop, after
//! `try_publish` has returned, so the session cannot know it when it publishes. What it does
//! know is the order: the client's request channel is a FIFO, the session is the only sender
//! on it while the session runs, and the event loop reports `Outgoing::Publish(pkid)` for
//! requests in the order they were queued. Hence:
//!
//! 1. every request accepted by `try_publish` (data batches *and* retained status messages) is
//!    recorded with [`InFlight::queued`], in the order of the calls, and nothing else is;
//! 2. [`InFlight::on_publish`] pairs the pkid of the next `Outgoing::Publish` with the oldest
//!    recorded request that has no pkid yet;
//! 3. [`InFlight::on_puback`] removes and returns the request with that pkid, and only then may
//!    its events be deleted from the spool. A pkid that matches nothing (a late duplicate) is
//!    ignored; rumqttc does not reuse a pkid while it is unacknowledged.
//!
//! # Reconnect and resend
//!
//! The tracker lives as long as one connection. Every connection gets a fresh rumqttc event
//! loop, so rumqttc never resends on its own; when the connection drops the tracker is
//! dropped with it, unacknowledged events simply stay in the spool, and the next session's
//! scheduler reads them again from the oldest. A batch is therefore delivered at least once,
//! with duplicates bounded by the in-flight window.

use crate::event::Stream;
use crate::spool::AckRef;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// One request queued on the client: a batch of a stream, or a status message (`stream` None,
/// nothing to delete when acknowledged).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The batch's stream, for deleting its events on PUBACK; `None` for a control message.
    pub stream: Option<Stream>,
    /// What to hand to the spool once acknowledged.
    pub acks: Vec<AckRef>,
    /// When it was queued, for the acknowledgement latency metric.
    pub at: Instant,
    /// The remote agent is told when this one is acknowledged (the configuration state that
    /// confirms a change: the broker took a message on the new session).
    pub confirms: bool,
}

/// Requests queued on the client and not yet acknowledged, paired with their packet ids as
/// the event loop reports them (see the module doc for the invariant).
#[derive(Debug, Default)]
pub struct InFlight {
    /// Queued, pkid not yet known; oldest first.
    unassigned: VecDeque<Sent>,
    by_pkid: HashMap<u16, Sent>,
}

impl InFlight {
    /// An empty tracker for a new connection.
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// `try_publish` accepted this request; call in the order of the calls.
    pub fn queued(&mut self, sent: Sent) {
        self.unassigned.push_back(sent);
    }

    /// The event loop wrote a PUBLISH with `pkid`: it belongs to the oldest request without one.
    /// A PUBLISH with no recorded request (none is expected) is ignored.
    pub fn on_publish(&mut self, pkid: u16) {
        if let Some(sent) = self.unassigned.pop_front() {
            self.by_pkid.insert(pkid, sent);
        }
    }

    /// The broker acknowledged `pkid`: the request it belongs to, now safe to delete from the
    /// spool, or `None` for an unknown or repeated pkid.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Sent> {
        self.by_pkid.remove(&pkid)
    }

    /// Requests not yet acknowledged, with or without a pkid: what counts against
    /// `mqtt.max_inflight`.
    pub fn len(&self) -> usize {
        self.unassigned.len() + self.by_pkid.len()
    }

    /// Whether every queued request has been acknowledged (a draining session may stop).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(stream: Stream, seqs: std::ops::Range<u64>) -> Sent {
        Sent {
            stream: Some(stream),
            acks: seqs.map(|seq| AckRef { chunk: 0, seq }).collect(),
            at: Instant::now(),
            confirms: false,
        }
    }

    fn status() -> Sent {
        Sent {
            stream: None,
            acks: Vec::new(),
            at: Instant::now(),
            confirms: false,
        }
    }

    fn first_seq(s: &Sent) -> Option<u64> {
        s.acks.first().map(|a| a.seq)
    }

    #[test]
    fn pkids_pair_with_requests_in_queue_order() {
        let mut f = InFlight::new();
        f.queued(batch(Stream::Pos, 0..10));
        f.queued(batch(Stream::Ble, 0..5));
        f.on_publish(7);
        f.on_publish(8);
        assert_eq!(f.len(), 2);
        // Acknowledgements may come in any order.
        let b = f.on_puback(8).expect("pkid 8 is the second request");
        assert_eq!((b.stream, first_seq(&b)), (Some(Stream::Ble), Some(0)));
        let a = f.on_puback(7).expect("pkid 7 is the first request");
        assert_eq!((a.stream, a.acks.len()), (Some(Stream::Pos), 10));
        assert!(f.is_empty());
    }

    #[test]
    fn status_messages_take_their_place_in_the_order() {
        let mut f = InFlight::new();
        f.queued(batch(Stream::Pos, 0..3));
        f.queued(status());
        f.queued(batch(Stream::Pos, 3..6));
        for pkid in [1, 2, 3] {
            f.on_publish(pkid);
        }
        assert_eq!(f.on_puback(2).map(|s| s.stream), Some(None));
        assert_eq!(f.on_puback(3).and_then(|s| first_seq(&s)), Some(3));
        assert_eq!(f.on_puback(1).and_then(|s| first_seq(&s)), Some(0));
    }

    #[test]
    fn puback_before_its_publish_is_reported_matches_nothing() {
        let mut f = InFlight::new();
        f.queued(batch(Stream::Wifi, 0..1));
        assert_eq!(f.on_puback(1), None);
        assert_eq!(f.len(), 1, "still in flight until paired and acknowledged");
        f.on_publish(1);
        assert!(f.on_puback(1).is_some());
    }

    #[test]
    fn unknown_and_repeated_pubacks_are_ignored() {
        let mut f = InFlight::new();
        f.queued(batch(Stream::Pos, 0..2));
        f.on_publish(5);
        assert!(f.on_puback(5).is_some());
        assert_eq!(
            f.on_puback(5),
            None,
            "a duplicate PUBACK deletes nothing twice"
        );
        assert_eq!(f.on_puback(6), None);
        assert!(f.is_empty());
    }

    #[test]
    fn publish_without_a_queued_request_is_ignored() {
        let mut f = InFlight::new();
        f.on_publish(1);
        assert!(f.is_empty());
        assert_eq!(f.on_puback(1), None);
    }

    #[test]
    fn pkids_are_reused_after_acknowledgement() {
        let mut f = InFlight::new();
        f.queued(batch(Stream::Pos, 0..1));
        f.on_publish(1);
        assert!(f.on_puback(1).is_some());
        f.queued(batch(Stream::Pos, 1..2));
        f.on_publish(1);
        assert_eq!(f.on_puback(1).and_then(|s| first_seq(&s)), Some(1));
    }

    #[test]
    fn counts_requests_with_and_without_pkid_against_the_window() {
        let mut f = InFlight::new();
        f.queued(batch(Stream::Pos, 0..1));
        f.queued(batch(Stream::Pos, 1..2));
        f.on_publish(1);
        assert_eq!(f.len(), 2);
    }
}
