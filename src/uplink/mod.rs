//! The MQTT publisher: QoS 1 batches from the spool, deleted only on PUBACK (docs/design.md,
//! "Uplink").
//!
//! Split as state + I/O: [`schedule`] decides what to publish next (cursors, linger,
//! round-robin, drain rate), [`inflight`] pairs PUBACKs with the batches they acknowledge, and
//! this module only moves bytes between them, the spool and rumqttc.
//!
//! Each connection gets a fresh rumqttc event loop, so rumqttc never replays on its own: after a
//! reconnect the uplink resends from the oldest unacknowledged event in the spool. Duplicates are
//! therefore bounded by the in-flight window, and nothing leaves sled before its PUBACK.

use crate::config::Config;
use crate::event::{batch_payload, now_ms, topic};
use crate::ops::{metrics, status};
use crate::spool::Spool;
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Transport,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub mod inflight;
pub mod schedule;

use inflight::{InFlight, Sent};
use schedule::{Limits, Scheduler, Step};

/// Everything the uplink needs, resolved from the config once (secrets read, TLS built).
#[derive(Clone)]
pub struct UplinkSettings {
    pub store: String,
    pub gateway: String,
    pub prefix: String,
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub linger: Duration,
    pub max_inflight: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub drain_rate: u32,
    pub status_interval: Duration,
    pub shutdown_timeout: Duration,
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

/// Builds a rustls client config (ring provider) from a CA file (or the system roots) and an
/// optional client certificate and key for mutual TLS.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let (ca_path, key) = match ca_file {
        Some(p) => (p.to_path_buf(), "mqtt.ca_file"),
        None => (
            std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            "system CA bundle",
        ),
    };
    let certs = CertificateDer::pem_file_iter(&ca_path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", ca_path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{key}: bad PEM in {}: {e}", ca_path.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "{key}: unusable CA certificate in {}: {e}",
                ca_path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{key}: no certificate found in {}",
            ca_path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, keyf)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("mqtt.client_cert_file: cannot read {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("mqtt.client_cert_file: bad PEM in {}: {e}", cert.display())
                })?;
            let key = PrivateKeyDer::from_pem_file(keyf).map_err(|e| {
                format!(
                    "mqtt.client_key_file: cannot read a private key from {}: {e}",
                    keyf.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("mqtt.client_key_file: key does not fit the certificate: {e}"))
        }
    }
}

/// What the uplink hands the remote agent (docs/fleet.md, "On the gateway"): it is the only
/// MQTT connection, so messages on the subscribed topics and the connection's fate come from it.
#[derive(Debug)]
pub enum Inbound {
    /// Connected; `subscribed` when the broker granted every remote topic (SUBACK). Only a
    /// granted subscription confirms a configuration change: a gateway the ACL cuts off from
    /// its config topics could never be corrected remotely.
    Connected { subscribed: bool },
    /// A connection attempt failed (the reason reaches a rollback's report).
    ConnectFailed(String),
    /// The broker acknowledged a publish sent with `confirms` on this session.
    Acknowledged,
    /// The session ended (the connection was lost or dropped on purpose).
    Disconnected,
    /// A message on one of the subscribed topics.
    Message { topic: String, payload: Vec<u8> },
}

/// What the daemon asks the uplink to do on the connection.
#[derive(Debug)]
pub enum Outbound {
    /// Publish at QoS 1 (configuration state, command answers); with `confirms`, its PUBACK
    /// is reported back as [`Inbound::Acknowledged`].
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
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
    pub subscribe: Vec<String>,
    pub inbound: mpsc::Sender<Inbound>,
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

/// A control message (status, configuration state, command answer) as it may be sent: the
/// payload itself, or, when topic and payload would not fit in one packet of `limit` bytes, a
/// bounded error document in its place. An oversized packet is never handed to rumqttc, which
/// would end the session over it (and every reconnection would end the same way).
pub fn fit_control(topic: &str, payload: Vec<u8>, limit: usize) -> Vec<u8> {
    // Fixed header (at most 5), topic length (2), packet id (2), MQTT 3.1.1 has no properties.
    if topic.len() + payload.len() + 9 <= limit {
        return payload;
    }
    metrics::global().count(metrics::Metric::OutgoingOversized, "", 1);
    tracing::error!(
        %topic,
        bytes = payload.len(),
        limit,
        "control message larger than a packet may be: sent as a bounded error instead"
    );
    serde_json::to_vec(&serde_json::json!({
        "schema": crate::event::SCHEMA,
        "kind": "error",
        "error": "oversized",
        "bytes": payload.len(),
        "limit": limit,
    }))
    .unwrap_or_default()
}

enum SessionEnd {
    Lost(String),
    Shutdown,
}

/// A session this long resets the reconnect backoff.
pub const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Full-jitter exponential backoff: uniform in [0, min(max, base·2^attempt)].
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=ms.max(1)))
}

/// Publishes the spool until `shutdown` turns true, reconnecting forever with jittered backoff.
pub async fn run(settings: UplinkSettings, spool: Arc<Spool>, shutdown: watch::Receiver<bool>) {
    run_live(settings, spool, shutdown, None, None).await
}

/// [`run`], and with `live` a reloaded `mqtt.drain_rate` applies to the running session; with
/// `remote` the session subscribes to the remote topics and carries the agent's requests.
pub async fn run_live(
    settings: UplinkSettings,
    spool: Arc<Spool>,
    mut shutdown: watch::Receiver<bool>,
    mut live: Option<watch::Receiver<Arc<Config>>>,
    mut remote: Option<RemoteLink>,
) {
    let mut settings = settings;
    let mut attempt: u32 = 0;
    let mut ever_connected = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match connect(&settings).await {
            Ok((client, eventloop)) => {
                let session_start = Instant::now();
                if ever_connected {
                    metrics::global().reconnect();
                }
                ever_connected = true;
                metrics::global().set_connected(true);
                tracing::info!(broker = %format!("{}:{}", settings.host, settings.port), client_id = %settings.client_id(), "connected to broker");
                let end = session(
                    &mut settings,
                    &spool,
                    client,
                    eventloop,
                    &mut shutdown,
                    live.as_mut(),
                    remote.as_mut(),
                )
                .await;
                metrics::global().set_connected(false);
                // A broker that drops the session right after accepting it (an ACL that refuses
                // the will or the topics) must not be hammered: the backoff only starts over
                // after a session that lasted.
                if session_start.elapsed() >= STABLE_SESSION {
                    attempt = 0;
                }
                if let Some(r) = &remote {
                    // Never dropped: a settle timer left running would confirm a change over
                    // a session that is gone.
                    deliver(r, Inbound::Disconnected).await;
                }
                match end {
                    SessionEnd::Shutdown => return,
                    SessionEnd::Lost(e) => {
                        tracing::warn!(error = %e, "broker connection lost; will resend unacknowledged events")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(broker = %format!("{}:{}", settings.host, settings.port), error = %e, attempt, "cannot connect to broker");
                if let Some(r) = &remote {
                    deliver(r, Inbound::ConnectFailed(e)).await;
                }
            }
        }
        let wait = backoff(attempt, settings.reconnect_min, settings.reconnect_max);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn connect(s: &UplinkSettings) -> Result<(AsyncClient, EventLoop), String> {
    let mut o = MqttOptions::new(s.client_id(), s.host.clone(), s.port);
    o.set_clean_session(false)
        .set_keep_alive(s.keep_alive)
        .set_inflight(s.max_inflight.clamp(1, u16::MAX as usize) as u16)
        .set_max_packet_size(INCOMING_MAX_BYTES, s.batch_max_bytes + 64 * 1024)
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
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => return Ok((client, eventloop)),
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

/// One connection's publishing loop: thin I/O around the [`Scheduler`] (what to send) and the
/// [`InFlight`] tracker (what a PUBACK acknowledges). Ends when the connection is lost, or after
/// a shutdown once everything in flight is acknowledged or `shutdown_timeout` has passed.
async fn session(
    s: &mut UplinkSettings,
    spool: &Arc<Spool>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    shutdown: &mut watch::Receiver<bool>,
    mut live: Option<&mut watch::Receiver<Arc<Config>>>,
    mut remote: Option<&mut RemoteLink>,
) -> SessionEnd {
    let mut sched = Scheduler::new(
        Limits {
            batch_max_events: s.batch_max_events,
            batch_max_bytes: s.batch_max_bytes,
            linger: s.linger,
            drain_rate: s.drain_rate,
        },
        tokio::time::Instant::now(),
    );
    let mut inflight = InFlight::new();
    let mut status_tick = tokio::time::interval(s.status_interval);
    let mut draining_since: Option<Instant> = None;
    let status_topic = s.topic("status");
    let limit = outgoing_limit(s);
    let mut dropped_log = crate::ops::logging::Throttle::default();
    let publish_status = |state: &str, inflight: &mut InFlight| {
        let payload = fit_control(
            &status_topic,
            status::payload(&s.store, &s.gateway, state, Some(spool)),
            limit,
        );
        if client
            .try_publish(status_topic.clone(), QoS::AtLeastOnce, true, payload)
            .is_ok()
        {
            inflight.queued(Sent {
                stream: None,
                acks: Vec::new(),
                at: Instant::now(),
                confirms: false,
            });
        }
    };
    if let Some(r) = remote.as_deref() {
        let filters = r
            .subscribe
            .iter()
            .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
        if let Err(e) = client.try_subscribe_many(filters) {
            return SessionEnd::Lost(format!("cannot subscribe to the remote topics: {e}"));
        }
    }
    loop {
        if let Some(rx) = live.as_deref_mut() {
            if rx.has_changed().unwrap_or(false) {
                let rate = rx.borrow_and_update().mqtt.drain_rate;
                if rate != s.drain_rate {
                    tracing::info!(from = s.drain_rate, to = rate, "mqtt.drain_rate changed");
                    s.drain_rate = rate;
                    sched.set_drain_rate(rate);
                }
            }
        }
        let mut wake_at: Option<tokio::time::Instant> = None;
        if draining_since.is_none() {
            while inflight.len() < s.max_inflight {
                let batch = match sched.next(spool.as_ref(), tokio::time::Instant::now(), now_ms())
                {
                    Step::Publish(batch) => batch,
                    Step::Wait(at) => {
                        wake_at = at;
                        break;
                    }
                };
                let payload = batch_payload(
                    &s.store,
                    &s.gateway,
                    now_ms(),
                    batch.events.iter().map(|e| e.json()),
                );
                let topic = s.topic(batch.stream.as_str());
                if topic.len() + payload.len() + 9 > limit {
                    // One event larger than a packet may be (batches are cut to batch_max_bytes,
                    // so this is a single event): it can never be delivered, and sending it would
                    // end every session. Counted and dropped, like a malformed frame.
                    let acks: Vec<_> = batch.events.iter().map(|e| e.ack_ref()).collect();
                    tracing::error!(stream = %batch.stream, events = acks.len(), bytes = payload.len(), limit, "event larger than an MQTT packet may be: dropped");
                    spool.count_drop(batch.stream, "oversized", acks.len() as u64);
                    if let Err(e) = spool.ack(batch.stream, &acks) {
                        tracing::error!(error = %e, "spool delete of an oversized event failed");
                    }
                    sched.published(&batch);
                    continue;
                }
                if client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                    .is_err()
                {
                    break;
                }
                sched.published(&batch);
                inflight.queued(Sent {
                    stream: Some(batch.stream),
                    acks: batch.events.iter().map(|e| e.ack_ref()).collect(),
                    at: Instant::now(),
                    confirms: false,
                });
            }
            wake_at = wake_at.or_else(|| sched.take_wake());
        } else if inflight.is_empty()
            || draining_since.is_some_and(|d| d.elapsed() >= s.shutdown_timeout)
        {
            return finish(s, &client, &mut eventloop, inflight.len()).await;
        }
        let room_left = inflight.len() < s.max_inflight && draining_since.is_none();
        let wake =
            wake_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => inflight.on_publish(pkid),
                Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                    match inflight.on_puback(ack.pkid) {
                        Some(Sent { stream: Some(stream), acks, at, .. }) => {
                            if let Err(e) = spool.ack(stream, &acks) {
                                tracing::error!(error = %e, "spool delete after PUBACK failed");
                            }
                            metrics::global().events_out(stream, acks.len() as u64);
                            metrics::global().ack_latency(at.elapsed().as_micros() as u64);
                        }
                        Some(Sent { confirms: true, .. }) => {
                            if let Some(r) = remote.as_deref() {
                                deliver(r, Inbound::Acknowledged).await;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    publish_status("online", &mut inflight);
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                    if let Some(r) = remote.as_deref_mut() {
                        let subscribed = ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                        if !subscribed {
                            tracing::error!(topics = %r.subscribe.join(", "), "the broker refused the subscription to the remote topics: check its ACL (docs/fleet.md); events are still delivered");
                        }
                        deliver(r, Inbound::Connected { subscribed }).await;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if let Some(r) = remote.as_deref_mut() {
                        let command = p.topic.ends_with("/cmd");
                        let msg = Inbound::Message { topic: p.topic.to_string(), payload: p.payload.to_vec() };
                        if command {
                            // A command may be dropped (its sender times out and may resend);
                            // a configuration document never is.
                            if r.inbound.try_send(msg).is_err() {
                                if let Some(held) = dropped_log.allow(Duration::from_secs(60)) {
                                    tracing::warn!(held_back = held, "command dropped: the previous ones are still being handled");
                                }
                            }
                        } else {
                            deliver(r, msg).await;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return SessionEnd::Lost(describe(&e)),
            },
            _ = spool.wait_appended(), if room_left => {}
            _ = tokio::time::sleep_until(wake), if wake_at.is_some() => {}
            _ = status_tick.tick() => publish_status("online", &mut inflight),
            Some(req) = next_request(remote.as_deref_mut()), if draining_since.is_none() => match req {
                Outbound::Publish { topic, payload, retain, confirms } => {
                    let payload = fit_control(&topic, payload, limit);
                    if client.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_ok() {
                        inflight.queued(Sent { stream: None, acks: Vec::new(), at: Instant::now(), confirms });
                    }
                }
                Outbound::Status => publish_status("online", &mut inflight),
                Outbound::Reconnect => {
                    // A clean DISCONNECT, so the broker does not publish the last will.
                    if client.try_disconnect().is_ok() {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                        while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
                            if matches!(ev, MqttEvent::Outgoing(Outgoing::Disconnect)) {
                                break;
                            }
                        }
                    }
                    return SessionEnd::Lost("reconnect requested by a signed command".into());
                }
            },
            _ = shutdown.changed(), if draining_since.is_none() => {
                draining_since = Some(Instant::now());
                tracing::info!(in_flight = inflight.len(), "shutting down: waiting for in-flight acknowledgements");
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if draining_since.is_some() => {}
        }
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

/// Publishes the retained `offline` status, waits briefly for its PUBACK and disconnects.
async fn finish(
    s: &UplinkSettings,
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    unacked: usize,
) -> SessionEnd {
    if unacked > 0 {
        tracing::warn!(unacked_batches = unacked, "shutdown timeout: unacknowledged batches stay in the spool and are resent on the next start");
    }
    let _ = client.try_publish(
        s.topic("status"),
        QoS::AtLeastOnce,
        true,
        status::offline_payload(&s.store, &s.gateway),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut disconnect_sent = false;
    while let Ok(ev) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
        match ev {
            Ok(MqttEvent::Incoming(Packet::PubAck(_))) if !disconnect_sent => {
                disconnect_sent = true;
                let _ = client.try_disconnect();
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => break,
            Err(_) => break,
            _ => {}
        }
    }
    SessionEnd::Shutdown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_control_message_is_replaced_by_a_bounded_error() {
        let topic = "storegw/v1/s1/g1/config/state";
        let small = b"{\"kind\":\"config_state\"}".to_vec();
        assert_eq!(fit_control(topic, small.clone(), 1024), small);
        let big = vec![b'x'; 2_000_000];
        let out = fit_control(topic, big, 128 * 1024);
        assert!(out.len() < 256, "{} bytes", out.len());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["error"], "oversized");
        assert_eq!(v["bytes"], 2_000_000);
        // Exactly at the limit is sent as is; one byte more is not.
        let at = vec![b'y'; 1024 - topic.len() - 9];
        assert_eq!(fit_control(topic, at.clone(), 1024), at);
        let over = vec![b'y'; 1024 - topic.len() - 8];
        assert_ne!(fit_control(topic, over.clone(), 1024), over);
    }
}
