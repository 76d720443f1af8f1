//! ONVIF events by PullPoint (ONVIF Core, section 9.1; WS-BaseNotification):
//! CreatePullPointSubscription at the Events service, PullMessages (a long
//! poll), Renew and Unsubscribe at the subscription's address, and the motion
//! state read out of the notifications.
//!
//! Invariants:
//! - Every call goes through `soap::call_addressed` (a deadline, the password
//!   as a digest, WS-Addressing `Action` and `To`, which cameras serving every
//!   subscription at one URL need).
//! - A PullMessages call's deadline is its long-poll timeout plus the plain
//!   call deadline, so a quiet camera is not an error.
//! - Topics are matched without their prefix (`tns1:` is a convention, not a
//!   rule); only the two motion topics below mean motion, anything else is
//!   counted and ignored.

use std::time::Duration;

use super::device::Camera;
use super::soap::{child, find};
use crate::base::error::Error;

/// The cell motion detector's topic; its `IsMotion` item says motion.
pub const CELL_MOTION: &str = "RuleEngine/CellMotionDetector/Motion";
/// The video source's motion alarm; its `State` item says motion.
pub const MOTION_ALARM: &str = "VideoSource/MotionAlarm";
/// Notifications taken per PullMessages at most.
pub const MESSAGE_LIMIT: u32 = 32;

const ACTION_CREATE: &str = "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
const ACTION_PULL: &str = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";
const ACTION_RENEW: &str = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest";
const ACTION_UNSUBSCRIBE: &str = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest";

/// A subscription the camera made for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where PullMessages, Renew and Unsubscribe go.
    pub address: String,
    /// How long it lives from now unless renewed (its TerminationTime less
    /// the camera's CurrentTime: the camera's clock need not match ours).
    pub lifetime: Option<Duration>,
}

/// One motion notification: which source it is about and whether it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Motion {
    /// The topic and the source items, e.g. `RuleEngine/CellMotionDetector/Motion VideoSourceConfigurationToken=VSC_1`.
    pub source: String,
    pub moving: bool,
}

/// What one PullMessages brought.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Motion notifications in the order sent.
    pub motion: Vec<Motion>,
    /// Every notification, motion or not.
    pub messages: usize,
    /// The subscription's new lifetime, if the answer says it.
    pub lifetime: Option<Duration>,
}

/// `PT60S` for `d` (whole seconds, at least one).
fn xs_duration(d: Duration) -> String {
    format!("PT{}S", d.as_secs().max(1))
}

/// Subscribes at the Events service `events_url` for `lifetime`.
pub fn subscribe(cam: &Camera, events_url: &str, lifetime: Duration) -> Result<Subscription, Error> {
    let op = "CreatePullPointSubscription";
    let body = format!(
        "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>{}</tev:InitialTerminationTime>\
         </tev:CreatePullPointSubscription>",
        xs_duration(lifetime)
    );
    let xml = cam.call_addressed(events_url, op, &body, ACTION_CREATE, cam.deadline)?;
    parse_subscription(&xml).ok_or_else(|| {
        Error::upstream(format!("ONVIF {op} at {events_url}: the answer has no SubscriptionReference/Address"))
    })
}

/// Waits up to `wait` for notifications at the subscription.
pub fn pull(cam: &Camera, sub: &Subscription, wait: Duration) -> Result<Pulled, Error> {
    let body = format!(
        "<tev:PullMessages><tev:Timeout>{}</tev:Timeout><tev:MessageLimit>{MESSAGE_LIMIT}</tev:MessageLimit>\
         </tev:PullMessages>",
        xs_duration(wait)
    );
    let xml = cam.call_addressed(&sub.address, "PullMessages", &body, ACTION_PULL, wait + cam.deadline)?;
    parse_pulled(&xml).ok_or_else(|| {
        Error::upstream(format!("ONVIF PullMessages at {}: the answer has no PullMessagesResponse", sub.address))
    })
}

/// Extends the subscription by `lifetime`; its new lifetime if the camera says it.
pub fn renew(cam: &Camera, sub: &Subscription, lifetime: Duration) -> Result<Option<Duration>, Error> {
    let body =
        format!("<wsnt:Renew><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:Renew>", xs_duration(lifetime));
    let xml = cam.call_addressed(&sub.address, "Renew", &body, ACTION_RENEW, cam.deadline)?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| Error::upstream(format!("ONVIF Renew: {e}")))?;
    Ok(find(doc.root(), "RenewResponse").and_then(lifetime_of))
}

/// Ends the subscription (the camera frees it now rather than at its termination).
pub fn unsubscribe(cam: &Camera, sub: &Subscription) -> Result<(), Error> {
    cam.call_addressed(&sub.address, "Unsubscribe", "<wsnt:Unsubscribe/>", ACTION_UNSUBSCRIBE, cam.deadline).map(drop)
}

/// TerminationTime less CurrentTime of a response element, if both parse.
fn lifetime_of(r: roxmltree::Node<'_, '_>) -> Option<Duration> {
    let time =
        |name: &str| child(r, name).and_then(|n| n.text()).and_then(|t| crate::base::clock::parse_time(t.trim()).ok());
    let left = time("TerminationTime")? - time("CurrentTime")?;
    u64::try_from(left).ok().map(Duration::from_millis)
}

/// The subscription of a CreatePullPointSubscriptionResponse.
pub fn parse_subscription(xml: &str) -> Option<Subscription> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let r = find(doc.root(), "CreatePullPointSubscriptionResponse")?;
    let address = child(r, "SubscriptionReference").and_then(|s| child(s, "Address")).and_then(|a| a.text())?;
    let address = address.trim();
    if address.is_empty() {
        return None;
    }
    Some(Subscription { address: address.to_string(), lifetime: lifetime_of(r) })
}

/// The notifications of a PullMessagesResponse.
pub fn parse_pulled(xml: &str) -> Option<Pulled> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let r = find(doc.root(), "PullMessagesResponse")?;
    let mut out = Pulled { lifetime: lifetime_of(r), ..Pulled::default() };
    for n in r.children().filter(|c| c.is_element() && c.tag_name().name() == "NotificationMessage") {
        out.messages += 1;
        if let Some(m) = motion_of(n) {
            out.motion.push(m);
        }
    }
    Some(out)
}

/// A topic without the prefix of its root (`tns1:VideoSource/MotionAlarm` -> `VideoSource/MotionAlarm`).
fn topic_path(topic: &str) -> &str {
    let t = topic.trim();
    match t.split_once(':') {
        Some((prefix, rest)) if !prefix.contains('/') => rest,
        _ => t,
    }
}

/// The motion a NotificationMessage says, if it is one of the motion topics.
fn motion_of(n: roxmltree::Node<'_, '_>) -> Option<Motion> {
    let topic = topic_path(child(n, "Topic")?.text()?);
    let item = match topic {
        CELL_MOTION => "IsMotion",
        MOTION_ALARM => "State",
        _ => return None,
    };
    // wsnt:Message wraps tt:Message.
    let msg = child(n, "Message").and_then(|m| child(m, "Message"))?;
    let items = |part: &str| {
        child(msg, part)
            .map(|p| {
                p.children()
                    .filter(|c| c.is_element() && c.tag_name().name() == "SimpleItem")
                    .filter_map(|c| Some((c.attribute("Name")?, c.attribute("Value")?)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let value = items("Data").into_iter().find(|(name, _)| *name == item)?.1;
    let moving = matches!(value.trim(), "true" | "1");
    let mut source = topic.to_string();
    for (name, v) in items("Source") {
        source.push_str(&format!(" {name}={v}"));
    }
    Some(Motion { source, moving })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of a common camera's answer (prefixes and namespace versions differ between vendors).
    const PULLED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
    <env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema"
      xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tev="http://www.onvif.org/ver10/events/wsdl"
      xmlns:tns1="http://www.onvif.org/ver10/topics"><env:Body><tev:PullMessagesResponse>
      <tev:CurrentTime>2026-12-03T08:00:00Z</tev:CurrentTime><tev:TerminationTime>2026-12-03T08:01:00Z</tev:TerminationTime>
      <wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic>
        <wsnt:Message><tt:Message UtcTime="2026-12-03T08:00:00Z" PropertyOperation="Changed">
          <tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="VSC_1"/>
            <tt:SimpleItem Name="Rule" Value="MyMotionDetectorRule"/></tt:Source>
          <tt:Data><tt:SimpleItem Name="IsMotion" Value="true"/></tt:Data></tt:Message></wsnt:Message>
      </wsnt:NotificationMessage>
      <wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:Device/Trigger/DigitalInput</wsnt:Topic>
        <wsnt:Message><tt:Message UtcTime="2026-12-03T08:00:00Z"><tt:Source/><tt:Data><tt:SimpleItem Name="LogicalState" Value="true"/></tt:Data></tt:Message></wsnt:Message>
      </wsnt:NotificationMessage>
      <wsnt:NotificationMessage><wsnt:Topic>ns0:VideoSource/MotionAlarm</wsnt:Topic>
        <wsnt:Message><tt:Message UtcTime="2026-12-03T08:00:01Z" PropertyOperation="Changed">
          <tt:Source><tt:SimpleItem Name="Source" Value="VideoSource_1"/></tt:Source>
          <tt:Data><tt:SimpleItem Name="State" Value="false"/></tt:Data></tt:Message></wsnt:Message>
      </wsnt:NotificationMessage>
    </tev:PullMessagesResponse></env:Body></env:Envelope>"#;

    #[test]
    fn motion_topics_are_read_and_others_counted() {
        let p = parse_pulled(PULLED).expect("pulled");
        assert_eq!(p.messages, 3);
        assert_eq!(p.lifetime, Some(Duration::from_secs(60)));
        assert_eq!(
            p.motion,
            vec![
                Motion {
                    source: "RuleEngine/CellMotionDetector/Motion VideoSourceConfigurationToken=VSC_1 Rule=MyMotionDetectorRule"
                        .into(),
                    moving: true
                },
                Motion { source: "VideoSource/MotionAlarm Source=VideoSource_1".into(), moving: false },
            ]
        );
        assert_eq!(parse_pulled("<a/>"), None);
        assert_eq!(parse_pulled("not xml"), None);
    }

    #[test]
    fn a_subscription_reference_is_read() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
          xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsa5="http://www.w3.org/2005/08/addressing"
          xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2"><s:Body><tev:CreatePullPointSubscriptionResponse>
          <tev:SubscriptionReference><wsa5:Address>http://10.0.0.5/onvif/Subscription?Idx=3</wsa5:Address></tev:SubscriptionReference>
          <wsnt:CurrentTime>2026-12-03T08:00:00Z</wsnt:CurrentTime><wsnt:TerminationTime>2026-12-03T08:00:30Z</wsnt:TerminationTime>
          </tev:CreatePullPointSubscriptionResponse></s:Body></s:Envelope>"#;
        let s = parse_subscription(xml).expect("subscription");
        assert_eq!(s.address, "http://10.0.0.5/onvif/Subscription?Idx=3");
        assert_eq!(s.lifetime, Some(Duration::from_secs(30)));
        assert_eq!(parse_subscription(&xml.replace("http://10.0.0.5/onvif/Subscription?Idx=3", " ")), None);
    }

    #[test]
    fn topic_prefixes_do_not_matter() {
        assert_eq!(topic_path("tns1:VideoSource/MotionAlarm"), MOTION_ALARM);
        assert_eq!(topic_path(" RuleEngine/CellMotionDetector/Motion "), CELL_MOTION);
        assert_eq!(xs_duration(Duration::from_millis(10)), "PT1S");
    }
}
