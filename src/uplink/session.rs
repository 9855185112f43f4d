//! One MQTT connection as a state machine, with no socket, no client and no clock of its own
//! (in the manner of rumqttc's `state.rs`). See docs/design.md, "Uplink".
//!
//! The I/O loop in `uplink/mod.rs` turns rumqttc's events, timers and the agent's requests into
//! [`Input`]s for [`Session::handle`], then carries out every [`Action`] that
//! [`Session::poll`] hands back until it returns `None`. An action that asks something of the
//! client ([`Action::Publish`], [`Action::Subscribe`], [`Action::Disconnect`]) must be answered
//! with [`Input::Accepted`] or [`Input::Refused`] before the next poll: whether the client took
//! a request decides what is in flight and what the scheduler may send next.
//!
//! The session owns the [`Scheduler`] (what to publish next) and the [`InFlight`] tracker
//! (which batch a PUBACK acknowledges). It is created for each connection and dropped with it,
//! so a new connection reads the backlog again from its oldest unacknowledged event. Time is a
//! parameter of every call, so the tests drive it by hand (`session/tests.rs`).

use super::inflight::{InFlight, Sent};
use super::schedule::{Backlog, Batch, Scheduler, Step};
use super::{Inbound, Outbound};
use crate::event::batch_payload;
use crate::spool::AckRef;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

mod messages;
#[cfg(test)]
mod tests;

use messages::fits;
pub use messages::{
    fit_control, Action, Delivery, End, Fit, Input, Live, Publish, SessionConfig, StatusSource,
    Wire,
};

/// How long a reconnect requested by the agent waits for its DISCONNECT to be written.
const LEAVE_WAIT: Duration = Duration::from_secs(1);

/// How long a stopping session waits for the PUBACK of its `offline` status and its DISCONNECT.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for CONNACK.
    Connecting,
    /// Publishing.
    Open,
    /// Stopping: nothing new is sent; waiting for the in-flight acknowledgements.
    Draining { since: Instant },
    /// `offline` sent: waiting for its PUBACK, then for the DISCONNECT to be written.
    Closing {
        until: Instant,
        disconnect_asked: bool,
    },
    /// A reconnect was requested: waiting for the DISCONNECT to be written (`until` once the
    /// client took it).
    Leaving { until: Option<Instant> },
    /// [`Action::End`] handed out.
    Ended,
}

/// A request handed out and not yet answered.
#[derive(Debug)]
enum Pending<T> {
    /// A batch: the scheduler and the tracker learn of it only once the client took it.
    Batch(Batch<T>, Sent),
    /// A status or agent message, tracked so its PUBACK pairs correctly.
    Control(Sent),
    /// The `offline` status or the final DISCONNECT: the answer changes nothing.
    Ignored,
    Subscribe,
    /// The DISCONNECT of a requested reconnect.
    Leave,
}

/// Work decided by an input, handed out by the next polls in order.
#[derive(Debug)]
enum Todo {
    Act(Action),
    /// The `online` status (built at poll time: it reads the backlog).
    Status,
    Subscribe(Vec<String>),
    /// A status or agent message, and whether its PUBACK is reported to the agent.
    Control(Publish, bool),
    /// The DISCONNECT after the `offline` status was acknowledged.
    Disconnect,
    /// The DISCONNECT of a requested reconnect.
    Leave,
}

/// One connection's decisions: see the module doc.
#[derive(Debug)]
pub struct Session<T> {
    cfg: SessionConfig,
    sched: Scheduler,
    inflight: InFlight,
    phase: Phase,
    todo: VecDeque<Todo>,
    pending: Option<Pending<T>>,
    /// The scheduler may be asked for batches in this round (set by every input; cleared when
    /// it says wait, the window is full or the client refused a batch).
    filling: bool,
    /// When the scheduler wants to be asked again (linger, drain rate).
    sched_wake: Option<Instant>,
    /// When the next `online` status is due (from CONNACK, then every `status_interval`).
    status_at: Option<Instant>,
}

impl<T: Wire> Session<T> {
    /// A session for a connection just opened; it acts from [`Input::Connected`] on.
    pub fn new(cfg: SessionConfig, now: Instant) -> Session<T> {
        Session {
            sched: Scheduler::new(cfg.limits, now),
            cfg,
            inflight: InFlight::new(),
            phase: Phase::Connecting,
            todo: VecDeque::new(),
            pending: None,
            filling: false,
            sched_wake: None,
            status_at: None,
        }
    }

    /// Takes one input at `now`; what follows comes out of [`Session::poll`].
    pub fn handle(&mut self, input: Input, now: Instant) {
        let input = match input {
            Input::Accepted => return self.answer(Ok(()), now),
            Input::Refused(why) => return self.answer(Err(why), now),
            other => other,
        };
        self.filling = true;
        match self.phase {
            Phase::Connecting | Phase::Open | Phase::Draining { .. } => self.live(input, now),
            Phase::Closing {
                until,
                disconnect_asked,
            } => match input {
                // The first PUBACK (most likely the `offline` status's) lets it go.
                Input::PubAck(_) if !disconnect_asked => {
                    self.phase = Phase::Closing {
                        until,
                        disconnect_asked: true,
                    };
                    self.todo.push_back(Todo::Disconnect);
                }
                Input::DisconnectSent | Input::ConnectionLost(_) => self.end(End::Shutdown),
                _ => {}
            },
            Phase::Leaving { .. } => {
                if matches!(input, Input::DisconnectSent | Input::ConnectionLost(_)) {
                    self.end(leave_reason());
                }
            }
            Phase::Ended => {}
        }
    }

    /// Inputs while connecting, open or draining.
    fn live(&mut self, input: Input, now: Instant) {
        let open = self.phase == Phase::Open;
        match input {
            Input::Connected { .. } if self.phase == Phase::Connecting => {
                self.phase = Phase::Open;
                self.status_at = Some(now);
                if let Some(topics) = &self.cfg.remote {
                    self.todo.push_back(Todo::Subscribe(topics.clone()));
                }
            }
            Input::Connected { .. } => self.todo.push_back(Todo::Status),
            Input::SubAck { granted } => {
                if let Some(topics) = &self.cfg.remote {
                    if !granted {
                        tracing::error!(topics = %topics.join(", "), "the broker refused the subscription to the remote topics: check its ACL (docs/fleet.md); events are still delivered");
                    }
                    let msg = Inbound::Connected {
                        subscribed: granted,
                    };
                    self.tell_agent(msg, Delivery::Must);
                }
            }
            Input::PublishSent(pkid) => self.inflight.on_publish(pkid),
            Input::PubAck(pkid) => match self.inflight.on_puback(pkid) {
                Some(Sent {
                    stream: Some(stream),
                    acks,
                    at,
                    ..
                }) => self.todo.push_back(Todo::Act(Action::Ack {
                    stream,
                    acks,
                    latency: now.into_std().saturating_duration_since(at),
                })),
                Some(Sent { confirms: true, .. }) => {
                    self.tell_agent(Inbound::Acknowledged, Delivery::Must)
                }
                _ => {}
            },
            Input::Message { topic, payload } => {
                // A command may be dropped (its sender times out and may resend); a
                // configuration document never is.
                let delivery = if topic.ends_with("/cmd") {
                    Delivery::MayDrop
                } else {
                    Delivery::Must
                };
                self.tell_agent(Inbound::Message { topic, payload }, delivery);
            }
            Input::DrainRate(rate) => self.sched.set_drain_rate(rate),
            Input::Request(req) if open => match req {
                Outbound::Publish {
                    topic,
                    payload,
                    retain,
                    confirms,
                } => {
                    self.queue_control(topic, payload, retain, confirms);
                }
                Outbound::Status => self.todo.push_back(Todo::Status),
                Outbound::Reconnect => {
                    self.phase = Phase::Leaving { until: None };
                    self.todo.push_back(Todo::Leave);
                }
            },
            Input::Shutdown if open => {
                self.phase = Phase::Draining { since: now };
                tracing::info!(
                    in_flight = self.inflight.len(),
                    "shutting down: waiting for in-flight acknowledgements"
                );
            }
            Input::ConnectionLost(why) => self.end(End::Lost(why)),
            _ => {}
        }
    }

    /// The next action at `now` (`now_ms`: the wall clock, to age events and stamp batches),
    /// or `None` until the next input (or while an action waits for its answer).
    pub fn poll<B>(&mut self, backlog: &B, now: Instant, now_ms: i64) -> Option<Action>
    where
        B: Backlog<Item = T> + StatusSource,
    {
        if self.pending.is_some() {
            return None;
        }
        if let Some(todo) = self.todo.pop_front() {
            return Some(self.start(todo, backlog, now));
        }
        match self.phase {
            Phase::Open => self
                .fill(backlog, now, now_ms)
                .or_else(|| self.status_due(backlog, now)),
            Phase::Draining { since } => {
                if self.inflight.is_empty()
                    || now.saturating_duration_since(since) >= self.cfg.shutdown_timeout
                {
                    return Some(self.close(now));
                }
                self.status_due(backlog, now)
            }
            Phase::Closing { until, .. } if now >= until => Some(self.finish(End::Shutdown)),
            Phase::Leaving { until: Some(until) } if now >= until => {
                Some(self.finish(leave_reason()))
            }
            _ => None,
        }
    }

    /// When the session wants an [`Input::Tick`] if nothing else happens first.
    pub fn wake_at(&self) -> Option<Instant> {
        let earliest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.phase {
            Phase::Open => earliest(self.sched_wake, self.status_at),
            Phase::Draining { since } => {
                earliest(Some(since + self.cfg.shutdown_timeout), self.status_at)
            }
            Phase::Closing { until, .. } | Phase::Leaving { until: Some(until) } => Some(until),
            _ => None,
        }
    }

    /// Whether new events could be sent now (open, with room in the window): the I/O loop
    /// listens for appends only then.
    pub fn wants_appends(&self) -> bool {
        self.phase == Phase::Open && self.inflight.len() < self.cfg.max_inflight
    }

    /// Whether agent requests and the shutdown signal are taken (only while open: a draining
    /// or closing session sends nothing new).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Requests taken by the client and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Hands `msg` to the agent, when there is one.
    fn tell_agent(&mut self, msg: Inbound, delivery: Delivery) {
        if self.cfg.remote.is_some() {
            self.todo
                .push_back(Todo::Act(Action::Agent { msg, delivery }));
        }
    }

    /// A control message fitted to the packet limit, and the count of a replacement.
    fn control(&self, topic: String, payload: Vec<u8>, retain: bool) -> (Publish, Option<Action>) {
        let (payload, counted) = match fit_control(&topic, payload, self.cfg.packet_limit) {
            Fit::AsIs(p) => (p, None),
            Fit::Replaced { error, bytes } => {
                tracing::error!(%topic, bytes, limit = self.cfg.packet_limit, "control message larger than a packet may be: sent as a bounded error instead");
                let topic = topic.clone();
                (error, Some(Action::ControlReplaced { topic, bytes }))
            }
        };
        let p = Publish {
            topic,
            payload,
            retain,
        };
        (p, counted)
    }

    /// Queues a control message (its replacement counted first).
    fn queue_control(&mut self, topic: String, payload: Vec<u8>, retain: bool, confirms: bool) {
        let (p, counted) = self.control(topic, payload, retain);
        self.todo.extend(counted.map(Todo::Act));
        self.todo.push_back(Todo::Control(p, confirms));
    }

    /// Hands out one piece of decided work, noting what its answer must settle.
    fn start<B: StatusSource>(&mut self, todo: Todo, backlog: &B, now: Instant) -> Action {
        let (action, pending) = match todo {
            Todo::Act(a) => (a, None),
            Todo::Status => {
                let topic = self.cfg.topic("status");
                let doc = backlog.status(&self.cfg.store, &self.cfg.gateway);
                let (p, counted) = self.control(topic, doc, true);
                match counted {
                    Some(count) => {
                        self.todo.push_front(Todo::Control(p, false));
                        (count, None)
                    }
                    None => (Action::Publish(p), Some(control(now, false))),
                }
            }
            Todo::Control(p, confirms) => (Action::Publish(p), Some(control(now, confirms))),
            Todo::Subscribe(topics) => (Action::Subscribe(topics), Some(Pending::Subscribe)),
            Todo::Disconnect => (Action::Disconnect, Some(Pending::Ignored)),
            Todo::Leave => (Action::Disconnect, Some(Pending::Leave)),
        };
        self.pending = pending;
        action
    }

    /// The status, when its timer has run out.
    fn status_due<B: StatusSource>(&mut self, backlog: &B, now: Instant) -> Option<Action> {
        let at = self.status_at.filter(|at| *at <= now)?;
        // Like a tokio interval that bursts: the next one is due one period after this one.
        self.status_at = Some(at + self.cfg.status_interval);
        Some(self.start(Todo::Status, backlog, now))
    }

    /// The next batch, while the window has room and the scheduler has one due.
    fn fill<B: Backlog<Item = T>>(
        &mut self,
        backlog: &B,
        now: Instant,
        now_ms: i64,
    ) -> Option<Action> {
        if !self.filling {
            return None;
        }
        if self.inflight.len() >= self.cfg.max_inflight {
            self.stop_filling(None);
            return None;
        }
        let batch = match self.sched.next(backlog, now, now_ms) {
            Step::Publish(batch) => batch,
            Step::Wait(at) => {
                self.stop_filling(at);
                return None;
            }
        };
        let payload = batch_payload(
            &self.cfg.store,
            &self.cfg.gateway,
            now_ms,
            batch.events.iter().map(|e| e.json()),
        );
        let topic = self.cfg.topic(batch.stream.as_str());
        let acks: Vec<AckRef> = batch.events.iter().map(|e| e.ack_ref()).collect();
        if !fits(&topic, payload.len(), self.cfg.packet_limit) {
            // One event larger than a packet may be (batches are cut to batch_max_bytes, so
            // this is a single event): it can never be delivered, and sending it would end
            // every session. Counted and dropped, like a malformed frame.
            tracing::error!(stream = %batch.stream, events = acks.len(), bytes = payload.len(), limit = self.cfg.packet_limit, "event larger than an MQTT packet may be: dropped");
            self.sched.published(&batch);
            return Some(Action::Drop {
                stream: batch.stream,
                acks,
                reason: "oversized",
            });
        }
        let sent = Sent {
            stream: Some(batch.stream),
            acks,
            at: now.into_std(),
            confirms: false,
        };
        self.pending = Some(Pending::Batch(batch, sent));
        Some(Action::Publish(Publish {
            topic,
            payload,
            retain: false,
        }))
    }

    /// No more batches this round; the scheduler's wake-up (if it said none) is collected.
    fn stop_filling(&mut self, at: Option<Instant>) {
        self.filling = false;
        self.sched_wake = at.or_else(|| self.sched.take_wake());
    }

    /// Settles the request handed out last.
    fn answer(&mut self, result: Result<(), String>, now: Instant) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match (pending, result) {
            (Pending::Batch(batch, sent), Ok(())) => {
                self.sched.published(&batch);
                self.inflight.queued(sent);
            }
            (Pending::Batch(..), Err(_)) => self.stop_filling(None),
            (Pending::Control(sent), Ok(())) => self.inflight.queued(sent),
            (Pending::Subscribe, Err(e)) => {
                self.end(End::Lost(format!(
                    "cannot subscribe to the remote topics: {e}"
                )));
            }
            (Pending::Leave, Ok(())) => {
                self.phase = Phase::Leaving {
                    until: Some(now + LEAVE_WAIT),
                }
            }
            (Pending::Leave, Err(_)) => self.end(leave_reason()),
            _ => {}
        }
    }

    /// Drained (or out of time): the retained `offline` status, then wait to close.
    fn close(&mut self, now: Instant) -> Action {
        let unacked = self.inflight.len();
        if unacked > 0 {
            tracing::warn!(unacked_batches = unacked, "shutdown timeout: unacknowledged batches stay in the spool and are resent on the next start");
        }
        self.phase = Phase::Closing {
            until: now + CLOSE_WAIT,
            disconnect_asked: false,
        };
        self.pending = Some(Pending::Ignored);
        Action::Publish(Publish {
            topic: self.cfg.topic("status"),
            payload: crate::ops::status::offline_payload(&self.cfg.store, &self.cfg.gateway),
            retain: true,
        })
    }

    /// Ends the session once everything already decided has been handed out.
    fn end(&mut self, end: End) {
        self.phase = Phase::Ended;
        self.todo.push_back(Todo::Act(Action::End(end)));
    }

    /// Ends the session now.
    fn finish(&mut self, end: End) -> Action {
        self.phase = Phase::Ended;
        Action::End(end)
    }
}

/// A status or agent message awaiting its answer, queued at `now`.
fn control<T>(now: Instant, confirms: bool) -> Pending<T> {
    Pending::Control(Sent {
        stream: None,
        acks: Vec::new(),
        at: now.into_std(),
        confirms,
    })
}

/// How a session ends after a reconnect request.
fn leave_reason() -> End {
    End::Lost("reconnect requested by a signed command".into())
}
