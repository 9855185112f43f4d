//! The session's vocabulary: what the I/O loop reports ([`Input`]), what it must do
//! ([`Action`]), and what the session reads from the backlog ([`Wire`], [`StatusSource`]).

use super::super::schedule::{Backlog, Limits, Queued};
use super::super::{Inbound, Outbound};
use crate::event::{topic, Stream};
use crate::spool::AckRef;
use std::time::Duration;

/// An event as it goes on the wire: the scheduler's view plus its JSON and its spool handle.
pub trait Wire: Queued {
    /// The event's wire JSON, copied into the batch as is.
    fn json(&self) -> &[u8];
    /// What the spool needs to delete it once acknowledged.
    fn ack_ref(&self) -> AckRef;
}

impl Wire for crate::spool::Spooled {
    fn json(&self) -> &[u8] {
        crate::spool::Spooled::json(self)
    }
    fn ack_ref(&self) -> AckRef {
        crate::spool::Spooled::ack_ref(self)
    }
}

/// Where the retained `online` status comes from (it reports the spool's depth), so a test
/// backlog can stand in for the spool.
pub trait StatusSource {
    /// The `online` status document of this gateway.
    fn status(&self, store: &str, gateway: &str) -> Vec<u8>;
}

/// The live backlog: the pipeline's spool, and its health for the status document. The status
/// reports both, and the health is the pipeline's own (handed in), not a process-wide one.
pub struct Live<'a> {
    /// The events to publish.
    pub spool: &'a crate::spool::Spool,
    /// The pipeline's health registry.
    pub health: &'a crate::telemetry::health::Health,
}

impl Backlog for Live<'_> {
    type Item = crate::spool::Spooled;
    fn appended(&self, stream: Stream) -> u64 {
        Backlog::appended(self.spool, stream)
    }
    fn peek(
        &self,
        stream: Stream,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Vec<Self::Item> {
        Backlog::peek(self.spool, stream, from, max_events, max_bytes)
    }
}

impl StatusSource for Live<'_> {
    fn status(&self, store: &str, gateway: &str) -> Vec<u8> {
        crate::ops::status::payload(self.health, store, gateway, "online", Some(self.spool))
    }
}

/// What one session needs to decide, resolved once from the settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Store and gateway ids: they name the topics and stamp every payload.
    pub store: String,
    /// Gateway id: the topic level after the store id, and the `gateway` of every payload.
    pub gateway: String,
    /// `mqtt.topic_prefix`, the first level of every topic.
    pub prefix: String,
    /// Batching, linger and drain rate, for the scheduler.
    pub limits: Limits,
    /// Requests unacknowledged at once (`mqtt.max_inflight`): bounds duplicates after a drop.
    pub max_inflight: usize,
    /// How often the retained `online` status is refreshed.
    pub status_interval: Duration,
    /// How long a stopping session waits for in-flight acknowledgements.
    pub shutdown_timeout: Duration,
    /// The largest packet this gateway may send (topic, payload and header).
    pub packet_limit: usize,
    /// The remote topics to subscribe to after CONNACK; `None` without `[remote]` (then nothing
    /// is subscribed and nothing is routed to an agent).
    pub remote: Option<Vec<String>>,
}

impl SessionConfig {
    pub(super) fn topic(&self, stream: &str) -> String {
        topic(&self.prefix, &self.store, &self.gateway, stream)
    }
}

/// What happened, as the I/O loop reports it.
#[derive(Debug)]
pub enum Input {
    /// CONNACK (the first input of every session; a later one only republishes the status).
    Connected {
        /// CONNACK's session-present flag; not acted on: subscribe and resend happen either way.
        session_present: bool,
    },
    /// SUBACK for the remote topics: `granted` when the broker granted every filter.
    SubAck {
        /// False when the broker refused any filter (its ACL); the agent gets it as `subscribed`.
        granted: bool,
    },
    /// The client took the request of the last action that asked for an answer.
    Accepted,
    /// The client refused it (request channel full, invalid topic): why.
    Refused(String),
    /// The event loop wrote a PUBLISH with this packet id (in the order requests were taken).
    PublishSent(u16),
    /// The broker acknowledged this packet id.
    PubAck(u16),
    /// A message on one of the subscribed topics.
    Message {
        /// The topic it came on; a `/cmd` message may be dropped while the agent is busy.
        topic: String,
        /// The message as the broker delivered it, handed to the agent unread.
        payload: Vec<u8>,
    },
    /// Events were appended to the backlog.
    Appended,
    /// The wake-up from [`Session::wake_at`] ran out, or the event loop reported something the
    /// session does not track: look again.
    Tick,
    /// `mqtt.drain_rate` was reloaded.
    DrainRate(u32),
    /// The agent asks for something on the connection.
    Request(Outbound),
    /// The daemon is stopping: drain what is in flight, then say `offline`.
    Shutdown,
    /// The event loop wrote the DISCONNECT.
    DisconnectSent,
    /// The connection failed: why.
    ConnectionLost(String),
}

/// A QoS 1 PUBLISH for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Full topic: a stream's, `status`, or one the agent asked for.
    pub topic: String,
    /// A batch, the status or an agent's document; with the topic it fits `packet_limit`.
    pub payload: Vec<u8>,
    /// Retained (status and configuration state, which a new subscriber must see).
    pub retain: bool,
}

/// How a message reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Wait for room: configuration documents and connection events are never dropped.
    Must,
    /// Drop when the agent is busy: a command's sender times out and may send it again.
    MayDrop,
}

/// Why a session ended, for the reconnect loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Connection lost or dropped on purpose: reconnect after a backoff.
    Lost(String),
    /// The daemon is stopping: do not reconnect.
    Shutdown,
}

/// What the I/O loop must do next.
#[derive(Debug)]
pub enum Action {
    /// Publish at QoS 1; answer with [`Input::Accepted`] or [`Input::Refused`].
    Publish(Publish),
    /// Subscribe to these filters at QoS 1; answer it.
    Subscribe(Vec<String>),
    /// Send a clean DISCONNECT (no last will); answer it.
    Disconnect,
    /// The broker acknowledged these events of `stream`: delete them from the spool.
    Ack {
        /// The stream whose spool tree holds the events.
        stream: Stream,
        /// The acknowledged batch's events, as the spool deletes them.
        acks: Vec<AckRef>,
        /// Time from publish to PUBACK, for the latency metric.
        latency: Duration,
    },
    /// These events can never be sent: count them under `reason` and delete them.
    Drop {
        /// The stream whose spool tree holds the events.
        stream: Stream,
        /// The events to delete unsent.
        acks: Vec<AckRef>,
        /// The `reason` they are counted under in status and metrics (`oversized`).
        reason: &'static str,
    },
    /// A control message was too large and goes as a bounded error: count it.
    ControlReplaced {
        /// The topic the message was for; the bounded error went there in its place.
        topic: String,
        /// Size of the original payload, in bytes.
        bytes: usize,
    },
    /// Hand this to the remote agent.
    Agent {
        /// The message or connection event for the agent.
        msg: Inbound,
        /// Whether to wait for room in the agent's channel or drop the message when it is full.
        delivery: Delivery,
    },
    /// The session is over.
    End(End),
}

/// A control message as it may be sent (see [`fit_control`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    /// Small enough: the payload itself.
    AsIs(Vec<u8>),
    /// Too large: a bounded error document instead, and the size of the original.
    Replaced {
        /// The `{"kind": "error", "error": "oversized", ...}` document to send instead.
        error: Vec<u8>,
        /// Size of the original payload, in bytes (also in the error document).
        bytes: usize,
    },
}

/// A control message (status, configuration state, command answer) as it may be sent: the
/// payload itself, or, when topic and payload would not fit in one packet of `limit` bytes, a
/// bounded error document in its place. An oversized packet is never handed to rumqttc, which
/// would end the session over it (and every reconnection would end the same way).
pub fn fit_control(topic: &str, payload: Vec<u8>, limit: usize) -> Fit {
    if fits(topic, payload.len(), limit) {
        return Fit::AsIs(payload);
    }
    let error = serde_json::to_vec(&serde_json::json!({
        "schema": crate::event::SCHEMA,
        "kind": "error",
        "error": "oversized",
        "bytes": payload.len(),
        "limit": limit,
    }))
    .unwrap_or_default();
    Fit::Replaced {
        error,
        bytes: payload.len(),
    }
}

/// Whether a QoS 1 PUBLISH of `topic` and `bytes` of payload fits in `limit`: fixed header (at
/// most 5), topic length (2), packet id (2); MQTT 3.1.1 has no properties.
pub(super) fn fits(topic: &str, bytes: usize, limit: usize) -> bool {
    topic.len() + bytes + 9 <= limit
}
