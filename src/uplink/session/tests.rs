//! The session machine driven by hand (the rig is in `tests/rig.rs`): no socket anywhere.

mod rig;

use super::*;
use crate::event::Stream;
use crate::uplink::backoff::{Backoff, STABLE_SESSION};
use crate::uplink::{Inbound, Outbound};
use rig::*;

#[test]
fn first_connect_subscribes_publishes_the_backlog_then_the_status() {
    let mut r = Rig::new(cfg());
    r.b.push(Stream::Pos, 4, T0_MS);
    let acts = r.connect();
    assert!(matches!(&acts[0], Action::Subscribe(t) if t == &[CONFIG.to_string(), CMD.into()]));
    let p = publishes(&acts);
    assert_eq!(p.len(), 3, "{acts:?}");
    assert_eq!(
        (p[0].topic.as_str(), p[0].retain),
        ("storegw/v1/s1/g1/pos", false)
    );
    assert_eq!((seqs(p[0]), seqs(p[1])), (vec![0, 1], vec![2, 3]));
    assert_eq!((p[2].topic.as_str(), p[2].retain), (STATUS, true));
    assert_eq!(
        r.s.in_flight(),
        3,
        "the status counts against the window too"
    );
}

#[test]
fn session_present_or_not_the_session_subscribes_and_resends_alike() {
    let run = |session_present| {
        let mut r = Rig::new(cfg());
        r.b.push(Stream::Ble, 3, T0_MS);
        format!("{:?}", r.feed(Input::Connected { session_present }))
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn a_refused_suback_tells_the_agent_it_is_not_subscribed() {
    let mut r = Rig::new(cfg());
    r.connect();
    let acts = r.feed(Input::SubAck { granted: false });
    let agent = to_agent(&acts);
    assert!(matches!(
        agent[..],
        [(Inbound::Connected { subscribed: false }, Delivery::Must)]
    ));
}

#[test]
fn a_granted_suback_tells_the_agent_it_is_subscribed() {
    let mut r = Rig::new(cfg());
    r.connect();
    let acts = r.feed(Input::SubAck { granted: true });
    let agent = to_agent(&acts);
    assert!(matches!(
        agent[..],
        [(Inbound::Connected { subscribed: true }, Delivery::Must)]
    ));
}

#[test]
fn without_remote_nothing_is_subscribed_nor_routed() {
    let mut r = Rig::new(local());
    let acts = r.connect();
    assert!(!acts.iter().any(|a| matches!(a, Action::Subscribe(_))));
    let msg = Input::Message {
        topic: CONFIG.into(),
        payload: b"{}".to_vec(),
    };
    assert!(to_agent(&r.feed(msg)).is_empty());
    assert!(to_agent(&r.feed(Input::SubAck { granted: true })).is_empty());
}

#[test]
fn remote_documents_must_reach_the_agent_and_commands_may_be_dropped() {
    let mut r = Rig::new(cfg());
    r.connect();
    for (topic, expected) in [(CONFIG, Delivery::Must), (CMD, Delivery::MayDrop)] {
        let acts = r.feed(Input::Message {
            topic: topic.into(),
            payload: b"doc".to_vec(),
        });
        let agent = to_agent(&acts);
        assert_eq!(agent.len(), 1);
        assert!(
            matches!(agent[0].0, Inbound::Message { topic: t, payload } if t == topic && payload == b"doc")
        );
        assert_eq!(agent[0].1, expected, "{topic}");
    }
}

#[test]
fn a_puback_outside_the_window_deletes_nothing() {
    let mut r = Rig::new(local());
    r.b.push(Stream::Pos, 2, T0_MS);
    r.connect();
    // Acknowledged before the event loop reported the PUBLISH: no pkid is known yet.
    assert!(acked(&r.feed(Input::PubAck(1))).is_empty());
    assert_eq!(r.write(), vec![1, 2]);
    assert!(acked(&r.feed(Input::PubAck(9))).is_empty(), "unknown pkid");
    assert_eq!(r.b.left(Stream::Pos), vec![0, 1]);
    assert_eq!(acked(&r.feed(Input::PubAck(1))), vec![0, 1]);
    assert!(
        acked(&r.feed(Input::PubAck(1))).is_empty(),
        "a repeated PUBACK"
    );
    assert!(r.b.left(Stream::Pos).is_empty());
}

#[test]
fn a_puback_deletes_exactly_the_events_it_acknowledges() {
    let mut r = Rig::new(local());
    r.b.push(Stream::Pos, 6, T0_MS);
    r.connect();
    assert_eq!(r.write(), vec![1, 2, 3, 4]); // three batches and the status
    r.at(50);
    let acts = r.feed(Input::PubAck(2));
    assert!(
        matches!(&acts[0], Action::Ack { stream: Stream::Pos, latency, .. } if *latency == Duration::from_millis(50))
    );
    assert_eq!(acked(&acts), vec![2, 3]);
    assert_eq!(r.b.left(Stream::Pos), vec![0, 1, 4, 5]);
    assert!(
        acked(&r.feed(Input::PubAck(4))).is_empty(),
        "the status deletes nothing"
    );
}

#[test]
fn a_new_session_resends_from_the_oldest_unacknowledged_event() {
    let mut r = Rig::new(local());
    r.b.push(Stream::Pos, 6, T0_MS);
    r.connect();
    r.write();
    assert_eq!(acked(&r.feed(Input::PubAck(1))), vec![0, 1]);
    let acts = r.feed(Input::ConnectionLost("broken pipe".into()));
    assert!(matches!(&acts[..], [Action::End(End::Lost(e))] if e == "broken pipe"));
    // The next connection gets a new session over the same backlog.
    let mut r = Rig::with(local(), r.b);
    let p = r.connect();
    let batches: Vec<Vec<u64>> = publishes(&p).iter().map(|p| seqs(p)).collect();
    assert_eq!(batches[..2], [vec![2, 3], vec![4, 5]]);
}

#[test]
fn the_window_caps_batches_in_flight() {
    let mut r = Rig::new(SessionConfig {
        max_inflight: 2,
        ..local()
    });
    r.b.push(Stream::Wifi, 10, T0_MS);
    let acts = r.connect();
    // Two batches fill the window; the status goes anyway and counts against it.
    assert_eq!(publishes(&acts).len(), 3);
    assert!(!r.s.wants_appends());
    r.write();
    assert!(
        publishes(&r.feed(Input::PubAck(1))).is_empty(),
        "still 2 in flight"
    );
    let acts = r.feed(Input::PubAck(2));
    let p = publishes(&acts);
    assert_eq!(p.iter().map(|p| seqs(p)).collect::<Vec<_>>(), [vec![4, 5]]);
}

#[test]
fn a_refused_publish_is_not_in_flight_and_goes_again_next_round() {
    let mut r = Rig::new(local());
    r.b.push(Stream::Pos, 2, T0_MS);
    r.refuse = true;
    let acts = r.connect();
    assert_eq!(
        publishes(&acts).len(),
        2,
        "one batch tried, then the status"
    );
    assert_eq!(r.s.in_flight(), 0);
    r.refuse = false;
    let acts = r.feed(Input::Tick);
    let p = publishes(&acts);
    assert_eq!((p.len(), seqs(p[0])), (1, vec![0, 1]));
    assert_eq!(r.s.in_flight(), 1);
}

#[test]
fn drain_rate_paces_batches_and_a_reload_applies_at_once() {
    let mut c = local();
    c.limits.drain_rate = 2;
    c.max_inflight = 10;
    let mut r = Rig::new(c);
    r.b.push(Stream::Pos, 8, T0_MS);
    let acts = r.connect();
    assert_eq!(
        publishes(&acts).len(),
        2,
        "one batch of tokens, then the status"
    );
    assert_eq!(r.s.wake_at(), Some(r.t0 + Duration::from_secs(1)));
    r.at(999);
    assert!(publishes(&r.feed(Input::Tick)).is_empty());
    r.at(1000);
    assert_eq!(seqs(publishes(&r.feed(Input::Tick))[0]), vec![2, 3]);
    let p = r.feed(Input::DrainRate(0));
    assert_eq!(publishes(&p).len(), 2, "unlimited: the rest at once");
}

#[test]
fn linger_holds_a_partial_batch_until_it_is_old_enough_or_full() {
    let mut c = local();
    c.limits.linger = Duration::from_millis(500);
    let mut r = Rig::new(c);
    r.b.push(Stream::Ble, 1, T0_MS);
    let acts = r.connect();
    assert_eq!(publishes(&acts).len(), 1, "only the status");
    assert_eq!(r.s.wake_at(), Some(r.t0 + Duration::from_millis(500)));
    r.at(100);
    r.b.push(Stream::Ble, 1, T0_MS + 100);
    let p = r.feed(Input::Appended);
    assert_eq!(
        seqs(publishes(&p)[0]),
        vec![0, 1],
        "a full batch does not linger"
    );
    r.at(200);
    r.b.push(Stream::Ble, 1, T0_MS + 200);
    assert!(publishes(&r.feed(Input::Appended)).is_empty());
    r.at(699);
    assert!(publishes(&r.feed(Input::Tick)).is_empty());
    r.at(700);
    assert_eq!(seqs(publishes(&r.feed(Input::Tick))[0]), vec![2]);
}

#[test]
fn the_status_goes_on_its_timer_and_on_request() {
    let mut r = Rig::new(cfg());
    r.connect();
    assert_eq!(r.s.wake_at(), Some(r.t0 + Duration::from_secs(60)));
    r.at(59_999);
    assert!(publishes(&r.feed(Input::Tick)).is_empty());
    r.at(60_000);
    let acts = r.feed(Input::Tick);
    assert!(matches!(publishes(&acts)[..], [p] if p.topic == STATUS && p.retain));
    let acts = r.feed(Input::Request(Outbound::Status));
    assert!(matches!(publishes(&acts)[..], [p] if p.topic == STATUS));
}

#[test]
fn a_confirms_publish_reports_its_puback_to_the_agent() {
    let mut r = Rig::new(cfg());
    r.connect();
    r.write(); // the status: pkid 1
    let publish = |confirms| {
        Input::Request(Outbound::Publish {
            topic: "storegw/v1/s1/g1/config/state".into(),
            payload: b"{}".to_vec(),
            retain: true,
            confirms,
        })
    };
    assert_eq!(publishes(&r.feed(publish(false))).len(), 1);
    assert_eq!(publishes(&r.feed(publish(true))).len(), 1);
    assert_eq!(r.write(), vec![2, 3]);
    assert!(to_agent(&r.feed(Input::PubAck(2))).is_empty());
    let acts = r.feed(Input::PubAck(3));
    assert!(matches!(
        to_agent(&acts)[..],
        [(Inbound::Acknowledged, Delivery::Must)]
    ));
}

#[test]
fn shutdown_drains_in_flight_then_says_offline_and_disconnects() {
    let mut r = Rig::new(local());
    r.b.push(Stream::Pos, 4, T0_MS);
    r.connect();
    assert_eq!(r.write(), vec![1, 2, 3]);
    assert!(r.feed(Input::Shutdown).is_empty());
    assert!(!r.s.is_open());
    r.b.push(Stream::Pos, 2, T0_MS);
    assert!(
        publishes(&r.feed(Input::Appended)).is_empty(),
        "nothing new"
    );
    assert!(r.feed(Input::Request(Outbound::Status)).is_empty());
    assert_eq!(acked(&r.feed(Input::PubAck(1))), vec![0, 1]);
    r.feed(Input::PubAck(3));
    let acts = r.feed(Input::PubAck(2));
    assert_eq!(acked(&acts), vec![2, 3]);
    let p = publishes(&acts);
    assert_eq!(
        (p.len(), p[0].topic.as_str(), p[0].retain),
        (1, STATUS, true)
    );
    assert!(String::from_utf8_lossy(&p[0].payload).contains("\"offline\""));
    assert_eq!(r.write(), vec![4]);
    assert!(matches!(r.feed(Input::PubAck(4))[..], [Action::Disconnect]));
    assert!(matches!(
        r.feed(Input::DisconnectSent)[..],
        [Action::End(End::Shutdown)]
    ));
}

#[test]
fn shutdown_ends_at_shutdown_timeout_with_batches_unacknowledged() {
    let mut r = Rig::new(local());
    r.b.push(Stream::Pos, 2, T0_MS);
    r.connect();
    r.write();
    r.feed(Input::Shutdown);
    assert_eq!(r.s.wake_at(), Some(r.t0 + Duration::from_secs(5)));
    r.at(4_999);
    assert!(r.feed(Input::Tick).is_empty());
    r.at(5_000);
    let p = r.feed(Input::Tick);
    assert!(matches!(publishes(&p)[..], [p] if p.topic == STATUS));
    assert_eq!(
        r.b.left(Stream::Pos),
        vec![0, 1],
        "resent on the next start"
    );
    // No PUBACK for the offline status: the session ends anyway.
    r.at(7_000);
    assert!(matches!(
        r.feed(Input::Tick)[..],
        [Action::End(End::Shutdown)]
    ));
}

#[test]
fn an_oversized_control_message_goes_as_a_bounded_error() {
    let mut r = Rig::new(cfg());
    r.connect();
    let acts = r.feed(Input::Request(Outbound::Publish {
        topic: "storegw/v1/s1/g1/config/state".into(),
        payload: vec![b'x'; 2_000],
        retain: true,
        confirms: false,
    }));
    assert!(matches!(
        &acts[0],
        Action::ControlReplaced { bytes: 2_000, .. }
    ));
    let p = publishes(&acts);
    let v: serde_json::Value = serde_json::from_slice(&p[0].payload).unwrap_or_default();
    assert_eq!(
        (v["error"].as_str(), v["bytes"].as_u64()),
        (Some("oversized"), Some(2_000))
    );
}

#[test]
fn fit_control_replaces_exactly_what_would_not_fit() {
    let topic = "storegw/v1/s1/g1/config/state";
    let small = b"{\"kind\":\"config_state\"}".to_vec();
    assert_eq!(fit_control(topic, small.clone(), 1024), Fit::AsIs(small));
    let Fit::Replaced { error, bytes } = fit_control(topic, vec![b'x'; 2_000_000], 128 * 1024)
    else {
        panic!("two megabytes do not fit")
    };
    assert!(
        error.len() < 256 && bytes == 2_000_000,
        "{} bytes",
        error.len()
    );
    let at = vec![b'y'; 1024 - topic.len() - 9];
    assert_eq!(fit_control(topic, at.clone(), 1024), Fit::AsIs(at));
    let over = vec![b'y'; 1024 - topic.len() - 8];
    assert!(matches!(
        fit_control(topic, over, 1024),
        Fit::Replaced { .. }
    ));
}

#[test]
fn an_event_larger_than_a_packet_is_dropped_and_counted() {
    let mut r = Rig::new(local());
    r.b.push_json(Stream::Pos, T0_MS, vec![b'"'; 2_000]);
    r.b.push(Stream::Pos, 2, T0_MS);
    let acts = r.connect();
    assert!(
        matches!(&acts[0], Action::Drop { stream: Stream::Pos, acks, reason: "oversized" } if acks.len() == 1 && acks[0].seq == 0)
    );
    assert_eq!(seqs(publishes(&acts)[0]), vec![1, 2], "the session goes on");
    assert_eq!(r.s.in_flight(), 2, "the dropped event is not in flight");
}

#[test]
fn a_reconnect_request_disconnects_cleanly_then_ends() {
    let mut r = Rig::new(cfg());
    r.connect();
    assert!(matches!(
        r.feed(Input::Request(Outbound::Reconnect))[..],
        [Action::Disconnect]
    ));
    assert!(!r.s.is_open());
    assert_eq!(r.s.wake_at(), Some(r.t0 + Duration::from_secs(1)));
    let acts = r.feed(Input::DisconnectSent);
    assert!(matches!(&acts[..], [Action::End(End::Lost(e))] if e.contains("reconnect requested")));
    // The client refused the DISCONNECT: ends at once.
    let mut r = Rig::new(cfg());
    r.connect();
    r.refuse = true;
    let acts = r.feed(Input::Request(Outbound::Reconnect));
    assert!(matches!(
        &acts[..],
        [Action::Disconnect, Action::End(End::Lost(_))]
    ));
}

#[test]
fn a_subscription_the_client_refuses_ends_the_session_before_publishing() {
    let mut r = Rig::new(cfg());
    r.b.push(Stream::Pos, 2, T0_MS);
    r.refuse = true;
    let acts = r.connect();
    assert!(
        matches!(&acts[..], [Action::Subscribe(_), Action::End(End::Lost(e))] if e.starts_with("cannot subscribe"))
    );
    assert!(
        r.feed(Input::Tick).is_empty(),
        "an ended session does nothing"
    );
}

#[test]
fn backoff_starts_over_after_a_stable_session_only() {
    let (min, max) = (Duration::from_millis(500), Duration::from_secs(60));
    let mut b = Backoff::new(min, max);
    for _ in 0..3 {
        b.next_wait(|n| n);
    }
    assert_eq!(b.ceiling(), min * 8);
    b.session_ended(STABLE_SESSION - Duration::from_millis(1));
    assert_eq!((b.attempt(), b.ceiling()), (3, min * 8), "a short session");
    b.session_ended(STABLE_SESSION);
    assert_eq!((b.attempt(), b.ceiling()), (0, min), "a stable session");
}

#[test]
fn backoff_is_full_jitter_up_to_a_doubling_ceiling_capped_at_max() {
    let (min, max) = (Duration::from_millis(500), Duration::from_secs(4));
    let mut b = Backoff::new(min, max);
    let tops: Vec<Duration> = (0..6).map(|_| b.next_wait(|n| n)).collect();
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(
        tops,
        [ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]
    );
    assert_eq!(b.next_wait(|_| 0), Duration::ZERO, "the floor is zero");
    assert_eq!(b.next_wait(|_| u64::MAX), max, "never above the ceiling");
    for _ in 0..100 {
        b.next_wait(|n| n);
    }
    assert_eq!(b.ceiling(), max, "no overflow after many attempts");
}
