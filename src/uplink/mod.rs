//! The MQTT publisher: QoS 1 batches from the spool, deleted only on PUBACK (docs/design.md,
//! "Uplink").
//!
//! Split as state + I/O: [`session`] is one connection as a state machine (what to subscribe,
//! publish, delete, hand to the agent, when to stop), built on [`schedule`] (what to publish
//! next: cursors, linger, round-robin, drain rate) and [`inflight`] (which batch a PUBACK
//! acknowledges). This module is only the I/O around it: the reconnect loop, rumqttc, the spool
//! and the agent's channels.
//!
//! Each connection gets a fresh rumqttc event loop, so rumqttc never replays on its own: after a
//! reconnect the uplink resends from the oldest unacknowledged event in the spool. Duplicates are
//! therefore bounded by the in-flight window, and nothing leaves sled before its PUBACK.

use crate::config::Config;
use crate::event::{now_ms, topic};
use crate::ops::status;
use crate::spool::Spool;
use crate::telemetry::metrics::Metric;
use crate::telemetry::Telemetry;
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Transport,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub mod backoff;
pub mod inflight;
pub mod schedule;
pub mod session;

pub use backoff::{Backoff, STABLE_SESSION};
use schedule::Limits;
pub use session::fit_control;
use session::{Action, Delivery, End, Input, Live, Session, SessionConfig};

/// Everything the uplink needs, resolved from the config once (secrets read, TLS built).
#[derive(Clone)]
pub struct UplinkSettings {
    /// `gateway.store_id`: a topic level, part of the client id, and stamped on every payload.
    pub store: String,
    /// `gateway.gateway_id`: the topic level after the store, in the client id and payloads.
    pub gateway: String,
    /// `mqtt.topic_prefix`, the first level of every topic (default `storegw/v1`).
    pub prefix: String,
    /// Broker host, from `mqtt.url` or `mqtt.host`.
    pub host: String,
    /// Broker port, from `mqtt.url` (1883 or 8883 when it names none) or `mqtt.port`.
    pub port: u16,
    /// TLS client configuration (CA, client certificate) when TLS is on; `None`: plain MQTT.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Username and the password from `mqtt.password_file` (empty without one); `None`: no login.
    pub credentials: Option<(String, String)>,
    /// MQTT keep-alive (`mqtt.keep_alive`): how soon a dead connection is noticed.
    pub keep_alive: Duration,
    /// Most events in one batch, one MQTT message (`mqtt.batch_max_events`).
    pub batch_max_events: usize,
    /// Most bytes of event JSON in one batch (`mqtt.batch_max_bytes`); + 64 KiB: packet limit.
    pub batch_max_bytes: usize,
    /// How long a batch that is not full waits for more events (`mqtt.linger`).
    pub linger: Duration,
    /// Requests unacknowledged at once (`mqtt.max_inflight`): bounds duplicates after a drop.
    pub max_inflight: usize,
    /// Ceiling of the first reconnect wait (`mqtt.reconnect_min`), doubled per failed attempt.
    pub reconnect_min: Duration,
    /// Cap of that ceiling (`mqtt.reconnect_max`); each wait is uniform in 0 to the ceiling.
    pub reconnect_max: Duration,
    /// Events per second published at most (`mqtt.drain_rate`), 0 = unlimited; reloaded live.
    pub drain_rate: u32,
    /// How often the retained `online` status is published again (`mqtt.status_interval`).
    pub status_interval: Duration,
    /// How long a shutdown waits for in-flight acknowledgements (`mqtt.shutdown_timeout`).
    pub shutdown_timeout: Duration,
    /// How long a connection attempt waits for CONNACK (`mqtt.connect_timeout`).
    pub connect_timeout: Duration,
}

impl UplinkSettings {
    /// Resolves broker address, credentials and TLS from the config; errors name the key.
    pub fn from_config(c: &Config) -> Result<UplinkSettings, String> {
        let (host, port, tls_on) = c.broker().map_err(|e| format!("mqtt.url: {e}"))?;
        if !tls_on && c.mqtt.allow_insecure && !crate::config::is_loopback_host(&host) {
            tracing::warn!(
                broker = %host,
                "mqtt.allow_insecure = true: MQTT to a broker that is not this machine goes \
                 without TLS (credentials and POS data in clear)"
            );
        }
        let credentials = match (&c.mqtt.username, &c.mqtt.password_file) {
            (Some(u), Some(p)) => {
                let pw = std::fs::read_to_string(p)
                    .map_err(|e| format!("mqtt.password_file: cannot read {}: {e}", p.display()))?;
                Some((u.clone(), pw.trim_end_matches(['\r', '\n']).to_string()))
            }
            (Some(u), None) => Some((u.clone(), String::new())),
            _ => None,
        };
        let tls = if tls_on {
            Some(Arc::new(tls_config(
                c.mqtt.ca_file.as_deref(),
                c.mqtt
                    .client_cert_file
                    .as_deref()
                    .zip(c.mqtt.client_key_file.as_deref()),
            )?))
        } else {
            None
        };
        Ok(UplinkSettings {
            store: c.gateway.store_id.clone(),
            gateway: c.gateway.gateway_id.clone(),
            prefix: c.mqtt.topic_prefix.clone(),
            host,
            port,
            tls,
            credentials,
            keep_alive: c.mqtt.keep_alive.0,
            batch_max_events: c.mqtt.batch_max_events,
            batch_max_bytes: c.mqtt.batch_max_bytes.0 as usize,
            linger: c.mqtt.linger.0,
            max_inflight: c.mqtt.max_inflight as usize,
            reconnect_min: c.mqtt.reconnect_min.0,
            reconnect_max: c.mqtt.reconnect_max.0,
            drain_rate: c.mqtt.drain_rate,
            status_interval: c.mqtt.status_interval.0,
            shutdown_timeout: c.mqtt.shutdown_timeout.0,
            connect_timeout: c.mqtt.connect_timeout.0,
        })
    }

    /// Stable client id, so the broker keeps this gateway's session across reconnects.
    pub fn client_id(&self) -> String {
        format!("storegw-{}-{}", self.store, self.gateway)
    }

    fn topic(&self, stream: &str) -> String {
        topic(&self.prefix, &self.store, &self.gateway, stream)
    }
}

/// The TLS client configuration lives in [`crate::tls`] (the central tools use it too).
pub use crate::tls::tls_config;

/// What the uplink hands the remote agent (docs/fleet.md, "On the gateway"): it is the only
/// MQTT connection, so messages on the subscribed topics and the connection's fate come from it.
#[derive(Debug)]
pub enum Inbound {
    /// Connected; `subscribed` when the broker granted every remote topic (SUBACK). Only a
    /// granted subscription confirms a configuration change: a gateway the ACL cuts off from
    /// its config topics could never be corrected remotely.
    Connected {
        /// False when the broker refused a remote topic (its ACL): no change is confirmed then.
        subscribed: bool,
    },
    /// A connection attempt failed (the reason reaches a rollback's report).
    ConnectFailed(String),
    /// The broker acknowledged a publish sent with `confirms` on this session.
    Acknowledged,
    /// The session ended (the connection was lost or dropped on purpose).
    Disconnected,
    /// A message on one of the subscribed topics.
    Message {
        /// The topic it came on: the agent tells a configuration layer from a command by it.
        topic: String,
        /// The message as the broker delivered it; the agent checks its signature.
        payload: Vec<u8>,
    },
}

/// What the daemon asks the uplink to do on the connection.
#[derive(Debug)]
pub enum Outbound {
    /// Publish at QoS 1 (configuration state, command answers); with `confirms`, its PUBACK
    /// is reported back as [`Inbound::Acknowledged`].
    Publish {
        /// Full topic: `{prefix}/{store}/{gateway}/config/state` or `.../cmd/result`.
        topic: String,
        /// The JSON document; one too large for a packet goes as a bounded error instead.
        payload: Vec<u8>,
        /// Retained, so a new subscriber sees it (configuration state; command answers are not).
        retain: bool,
        /// Report its PUBACK to the agent: the broker took a message on this session.
        confirms: bool,
    },
    /// Publish the retained status document now.
    Status,
    /// Drop the connection and connect again.
    Reconnect,
}

/// The remote-control side of the connection: topics to subscribe to after every CONNACK,
/// messages in, requests out. Absent when `[remote]` is not configured (nothing subscribed).
pub struct RemoteLink {
    /// Subscribed after every CONNACK: the gateway's `config` and `cmd` topics, `_fleet/config`.
    pub subscribe: Vec<String>,
    /// To the agent: messages on those topics and the connection's events.
    pub inbound: mpsc::Sender<Inbound>,
    /// From the agent: what to publish or do on the connection.
    pub outbound: mpsc::Receiver<Outbound>,
}

/// Largest packet accepted from the broker: a signed document (at most 256 KiB) with its MQTT
/// header; anything the gateway subscribes to is smaller.
pub const INCOMING_MAX_BYTES: usize = crate::remote::document::MAX_DOCUMENT_BYTES + 16 * 1024;

/// Messages accepted from the broker for the agent before new ones are dropped (documents are
/// retained and come again at the next connection; a dropped command times out at its sender).
pub const INBOUND_CAPACITY: usize = 32;

/// The largest packet this gateway sends: a full batch with room for its envelope.
fn outgoing_limit(s: &UplinkSettings) -> usize {
    s.batch_max_bytes + 64 * 1024
}

/// Publishes the spool until `shutdown` turns true, reconnecting forever with jittered backoff.
/// The session state, acknowledgements and latencies are counted in `telemetry` (the
/// pipeline's), whose health also feeds the retained status document.
pub async fn run(
    settings: UplinkSettings,
    spool: Arc<Spool>,
    telemetry: Telemetry,
    shutdown: watch::Receiver<bool>,
) {
    run_live(settings, spool, telemetry, shutdown, None, None).await
}

/// [`run`], and with `live` a reloaded `mqtt.drain_rate` applies to the running session; with
/// `remote` the session subscribes to the remote topics and carries the agent's requests.
pub async fn run_live(
    settings: UplinkSettings,
    spool: Arc<Spool>,
    telemetry: Telemetry,
    mut shutdown: watch::Receiver<bool>,
    mut live: Option<watch::Receiver<Arc<Config>>>,
    mut remote: Option<RemoteLink>,
) {
    let mut settings = settings;
    let metrics = telemetry.metrics();
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut ever_connected = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match connect(&settings).await {
            Ok((client, eventloop, session_present)) => {
                let session_start = Instant::now();
                if ever_connected {
                    metrics.reconnect();
                }
                ever_connected = true;
                metrics.set_connected(true);
                tracing::info!(broker = %format!("{}:{}", settings.host, settings.port), client_id = %settings.client_id(), session_present, "connected to broker");
                let end = session(
                    &mut settings,
                    &spool,
                    &telemetry,
                    (client, eventloop, session_present),
                    &mut shutdown,
                    live.as_mut(),
                    remote.as_mut(),
                )
                .await;
                metrics.set_connected(false);
                // A broker that drops the session right after accepting it (an ACL that refuses
                // the will or the topics) must not be hammered: the backoff only starts over
                // after a session that lasted.
                backoff.session_ended(session_start.elapsed());
                if let Some(r) = &remote {
                    // Never dropped: a settle timer left running would confirm a change over
                    // a session that is gone.
                    deliver(r, Inbound::Disconnected).await;
                }
                match end {
                    End::Shutdown => return,
                    End::Lost(e) => {
                        tracing::warn!(error = %e, "broker connection lost; will resend unacknowledged events")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(broker = %format!("{}:{}", settings.host, settings.port), error = %e, attempt = backoff.attempt(), "cannot connect to broker");
                if let Some(r) = &remote {
                    deliver(r, Inbound::ConnectFailed(e)).await;
                }
            }
        }
        let wait = backoff.next_wait(|ms| fastrand::u64(0..=ms));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Opens a connection and waits for its CONNACK: the client, its event loop and whether the
/// broker kept the session.
async fn connect(s: &UplinkSettings) -> Result<(AsyncClient, EventLoop, bool), String> {
    let mut o = MqttOptions::new(s.client_id(), s.host.clone(), s.port);
    o.set_clean_session(false)
        .set_keep_alive(s.keep_alive)
        .set_inflight(s.max_inflight.clamp(1, u16::MAX as usize) as u16)
        .set_max_packet_size(INCOMING_MAX_BYTES, outgoing_limit(s))
        .set_request_channel_capacity(s.max_inflight + 16)
        .set_last_will(LastWill::new(
            s.topic("status"),
            status::offline_payload(&s.store, &s.gateway),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((u, p)) = &s.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    if let Some(tls) = &s.tls {
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(o, s.max_inflight + 16);
    let deadline = tokio::time::Instant::now() + s.connect_timeout;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return Err(format!("no CONNACK within {:?}", s.connect_timeout)),
            Ok(Err(e)) => return Err(describe(&e)),
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(ack)))) => {
                return Ok((client, eventloop, ack.session_present))
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// One line that says what is wrong, e.g. an untrusted broker certificate.
fn describe(e: &rumqttc::ConnectionError) -> String {
    let s = e.to_string();
    if s.contains("UnknownIssuer") || s.contains("invalid peer certificate") {
        format!("{s} (the broker's certificate is not signed by mqtt.ca_file)")
    } else if s.contains("NotAuthorized") || s.contains("BadUserNamePassword") {
        format!("{s} (check mqtt.username / mqtt.password_file)")
    } else {
        s
    }
}

/// What the session machine needs of the settings, for one connection.
fn session_config(s: &UplinkSettings, remote: Option<&RemoteLink>) -> SessionConfig {
    SessionConfig {
        store: s.store.clone(),
        gateway: s.gateway.clone(),
        prefix: s.prefix.clone(),
        limits: Limits {
            batch_max_events: s.batch_max_events,
            batch_max_bytes: s.batch_max_bytes,
            linger: s.linger,
            drain_rate: s.drain_rate,
        },
        max_inflight: s.max_inflight,
        status_interval: s.status_interval,
        shutdown_timeout: s.shutdown_timeout,
        packet_limit: outgoing_limit(s),
        remote: remote.map(|r| r.subscribe.clone()),
    }
}

/// What the session machine makes of one rumqttc event.
fn input_of(ev: Result<MqttEvent, rumqttc::ConnectionError>) -> Input {
    match ev {
        Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => Input::PublishSent(pkid),
        Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => Input::DisconnectSent,
        Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => Input::PubAck(ack.pkid),
        Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => Input::Connected {
            session_present: ack.session_present,
        },
        Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => Input::SubAck {
            granted: ack
                .return_codes
                .iter()
                .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
        },
        Ok(MqttEvent::Incoming(Packet::Publish(p))) => Input::Message {
            topic: p.topic.to_string(),
            payload: p.payload.to_vec(),
        },
        Ok(_) => Input::Tick,
        Err(e) => Input::ConnectionLost(describe(&e)),
    }
}

/// The client's answer to a request, as the machine takes it.
fn answer(r: Result<(), rumqttc::ClientError>) -> Input {
    match r {
        Ok(()) => Input::Accepted,
        Err(e) => Input::Refused(e.to_string()),
    }
}

/// One connection: thin I/O around the [`Session`] machine, which decides everything (what to
/// publish, what a PUBACK deletes, what reaches the agent, when to stop). This loop feeds it
/// rumqttc's events, appends, timers and the agent's requests, and carries out its actions.
async fn session(
    s: &mut UplinkSettings,
    spool: &Arc<Spool>,
    telemetry: &Telemetry,
    (client, mut eventloop, session_present): (AsyncClient, EventLoop, bool),
    shutdown: &mut watch::Receiver<bool>,
    mut live: Option<&mut watch::Receiver<Arc<Config>>>,
    mut remote: Option<&mut RemoteLink>,
) -> End {
    let mut machine = Session::new(
        session_config(s, remote.as_deref()),
        tokio::time::Instant::now(),
    );
    let mut dropped_log = crate::ops::logging::Throttle::default();
    let mut input = Input::Connected { session_present };
    loop {
        machine.handle(input, tokio::time::Instant::now());
        if let Some(rx) = live.as_deref_mut() {
            if rx.has_changed().unwrap_or(false) {
                let rate = rx.borrow_and_update().mqtt.drain_rate;
                if rate != s.drain_rate {
                    tracing::info!(from = s.drain_rate, to = rate, "mqtt.drain_rate changed");
                    s.drain_rate = rate;
                    machine.handle(Input::DrainRate(rate), tokio::time::Instant::now());
                }
            }
        }
        let backlog = Live {
            spool,
            health: telemetry.health(),
        };
        while let Some(action) = machine.poll(&backlog, tokio::time::Instant::now(), now_ms()) {
            let reply = match action {
                Action::Publish(p) => {
                    answer(client.try_publish(p.topic, QoS::AtLeastOnce, p.retain, p.payload))
                }
                Action::Subscribe(topics) => answer(
                    client.try_subscribe_many(
                        topics
                            .into_iter()
                            .map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce)),
                    ),
                ),
                Action::Disconnect => answer(client.try_disconnect()),
                Action::Ack {
                    stream,
                    acks,
                    latency,
                } => {
                    if let Err(e) = spool.ack(stream, &acks) {
                        tracing::error!(error = %e, "spool delete after PUBACK failed");
                    }
                    telemetry.metrics().events_out(stream, acks.len() as u64);
                    telemetry.metrics().ack_latency(latency.as_micros() as u64);
                    continue;
                }
                Action::Drop {
                    stream,
                    acks,
                    reason,
                } => {
                    spool.count_drop(stream, reason, acks.len() as u64);
                    if let Err(e) = spool.ack(stream, &acks) {
                        tracing::error!(error = %e, "spool delete of an oversized event failed");
                    }
                    continue;
                }
                Action::ControlReplaced { .. } => {
                    telemetry.metrics().count(Metric::OutgoingOversized, "", 1);
                    continue;
                }
                Action::Agent { msg, delivery } => {
                    if let Some(r) = remote.as_deref() {
                        match delivery {
                            Delivery::Must => deliver(r, msg).await,
                            Delivery::MayDrop => {
                                if r.inbound.try_send(msg).is_err() {
                                    if let Some(held) = dropped_log.allow(Duration::from_secs(60)) {
                                        tracing::warn!(held_back = held, "command dropped: the previous ones are still being handled");
                                    }
                                }
                            }
                        }
                    }
                    continue;
                }
                Action::End(end) => return end,
            };
            machine.handle(reply, tokio::time::Instant::now());
        }
        let wake = machine.wake_at();
        let open = machine.is_open();
        input = tokio::select! {
            ev = eventloop.poll() => input_of(ev),
            _ = spool.wait_appended(), if machine.wants_appends() => Input::Appended,
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => Input::Tick,
            Some(req) = next_request(remote.as_deref_mut()), if open => Input::Request(req),
            _ = shutdown.changed(), if open => Input::Shutdown,
        };
    }
}

/// Hands the agent a message it must not lose, waiting for room (the daemon handles each in
/// milliseconds); gives up after a few seconds so a stopping daemon cannot wedge the session.
async fn deliver(r: &RemoteLink, msg: Inbound) {
    if tokio::time::timeout(Duration::from_secs(5), r.inbound.send(msg))
        .await
        .is_err()
    {
        tracing::warn!("remote message not handed over: the daemon is not reading");
    }
}

/// The agent's next request, or never when there is no remote link.
async fn next_request(remote: Option<&mut RemoteLink>) -> Option<Outbound> {
    match remote {
        Some(r) => r.outbound.recv().await,
        None => std::future::pending().await,
    }
}
