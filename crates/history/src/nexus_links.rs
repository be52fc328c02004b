//! What Nexus requests carry besides their payload (docs/nexus.md): links between a caller's
//! and a handler's workflow events, in the URL form Nexus passes them
//! (`temporal:///namespaces/{ns}/workflows/{id}/{run}/history?eventID=..&eventType=..&referenceType=EventReference`),
//! and the completion callback a start request offers (`temporal://system` and a token naming
//! the caller's operation).

use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::common::v1::{Link, link};
use chronicle_proto::temporal::api::enums::v1::EventType;
use chronicle_proto::temporal::api::nexus::v1 as nexus;
use prost::Message;

/// Temporal's callback URL for operations whose caller is this same server.
pub const SYSTEM_CALLBACK_URL: &str = "temporal://system";
/// The callback header holding the token (header keys are kept lowercase, as Temporal does).
pub const CALLBACK_TOKEN_HEADER: &str = "temporal-callback-token";
/// The Nexus link type of a workflow event link.
const WORKFLOW_EVENT_TYPE: &str = "temporal.api.common.v1.Link.WorkflowEvent";

/// The callback token for an operation (hex of the token message: opaque to handlers).
pub fn encode_callback_token(token: &pb::NexusCallbackToken) -> String {
    token
        .encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The operation a callback token names; `None` when it is not one of ours.
pub fn decode_callback_token(text: &str) -> Option<pb::NexusCallbackToken> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect();
    let token = pb::NexusCallbackToken::decode(bytes?.as_slice()).ok()?;
    (!token.workflow_id.is_empty() && token.scheduled_event_id > 0).then_some(token)
}

/// Percent-encodes a URL path segment or query value (unreserved characters stay).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `EVENT_TYPE_NEXUS_OPERATION_SCHEDULED` -> `NexusOperationScheduled` (Temporal's short name).
fn event_type_param(event_type: EventType) -> String {
    let name = event_type.as_str_name();
    let name = name.strip_prefix("EVENT_TYPE_").unwrap_or(name);
    name.split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_string() + &chars.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

/// Either form of an event type name.
fn parse_event_type(text: &str) -> Option<EventType> {
    if text.starts_with("EVENT_TYPE_") {
        return EventType::from_str_name(text);
    }
    let mut constant = String::from("EVENT_TYPE_");
    for (i, c) in text.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            constant.push('_');
        }
        constant.push(c.to_ascii_uppercase());
    }
    EventType::from_str_name(&constant)
}

/// A workflow event link in Nexus's form; `None` for other links.
pub fn to_nexus(link: &Link) -> Option<nexus::Link> {
    let Some(link::Variant::WorkflowEvent(we)) = &link.variant else {
        return None;
    };
    let mut url = format!(
        "temporal:///namespaces/{}/workflows/{}/{}/history",
        escape(&we.namespace),
        escape(&we.workflow_id),
        escape(&we.run_id)
    );
    if let Some(link::workflow_event::Reference::EventRef(r)) = &we.reference {
        let event_type = EventType::try_from(r.event_type).unwrap_or(EventType::Unspecified);
        url.push('?');
        if r.event_id > 0 {
            url.push_str(&format!("eventID={}&", r.event_id));
        }
        url.push_str(&format!(
            "eventType={}&referenceType=EventReference",
            event_type_param(event_type)
        ));
    }
    Some(nexus::Link {
        url,
        r#type: WORKFLOW_EVENT_TYPE.to_string(),
    })
}

/// A Nexus link naming a workflow event, as a Temporal link; `None` for anything else.
pub fn parse_workflow_event(link: &nexus::Link) -> Option<Link> {
    if link.r#type != WORKFLOW_EVENT_TYPE {
        return None;
    }
    let rest = link.url.strip_prefix("temporal://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let segments: Vec<&str> = path.split('/').collect();
    // "", "namespaces", ns, "workflows", id, run, "history"
    let ["", "namespaces", ns, "workflows", id, run, "history"] = segments.as_slice() else {
        return None;
    };
    let mut reference = None;
    let mut event_id = 0;
    let mut event_type = None;
    let mut reference_type = "";
    let mut request_id = String::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "eventID" => event_id = value.parse().ok()?,
            "eventType" => event_type = parse_event_type(&unescape(value)?),
            "referenceType" => reference_type = value,
            "requestID" => request_id = unescape(value)?,
            _ => {}
        }
    }
    let event_type = event_type.unwrap_or(EventType::Unspecified) as i32;
    if reference_type == "EventReference" {
        reference = Some(link::workflow_event::Reference::EventRef(
            link::workflow_event::EventReference {
                event_id,
                event_type,
            },
        ));
    } else if reference_type == "RequestIdReference" {
        // A start whose response carried no link names the run's Started event this way.
        reference = Some(link::workflow_event::Reference::RequestIdRef(
            link::workflow_event::RequestIdReference {
                request_id,
                event_type,
            },
        ));
    }
    Some(Link {
        variant: Some(link::Variant::WorkflowEvent(link::WorkflowEvent {
            namespace: unescape(ns)?,
            workflow_id: unescape(id)?,
            run_id: unescape(run)?,
            reference,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_event_links_round_trip() {
        let link = crate::apply::nexus_async::workflow_event_link(
            "my ns",
            "wf/1",
            "run",
            5,
            EventType::NexusOperationScheduled,
        );
        let n = to_nexus(&link).expect("a workflow event link");
        assert_eq!(
            n.url,
            "temporal:///namespaces/my%20ns/workflows/wf%2F1/run/history?eventID=5&eventType=NexusOperationScheduled&referenceType=EventReference"
        );
        assert_eq!(parse_workflow_event(&n), Some(link));
        let constant = nexus::Link {
            url: "temporal:///namespaces/ns/workflows/w/r/history?referenceType=EventReference&eventID=1&eventType=EVENT_TYPE_WORKFLOW_EXECUTION_STARTED".into(),
            r#type: WORKFLOW_EVENT_TYPE.into(),
        };
        let by_request = nexus::Link {
            url: "temporal:///namespaces/ns/workflows/w/r/history?referenceType=RequestIdReference&requestID=q-1&eventType=WorkflowExecutionStarted".into(),
            r#type: WORKFLOW_EVENT_TYPE.into(),
        };
        let Some(Link {
            variant: Some(link::Variant::WorkflowEvent(we)),
        }) = parse_workflow_event(&by_request)
        else {
            panic!("parsed");
        };
        assert_eq!(
            we.reference,
            Some(link::workflow_event::Reference::RequestIdRef(
                link::workflow_event::RequestIdReference {
                    request_id: "q-1".into(),
                    event_type: EventType::WorkflowExecutionStarted as i32,
                }
            ))
        );
        let parsed = parse_workflow_event(&constant).expect("parsed");
        assert_eq!(
            parsed,
            crate::apply::nexus_async::workflow_event_link(
                "ns",
                "w",
                "r",
                1,
                EventType::WorkflowExecutionStarted
            )
        );
    }

    #[test]
    fn bad_links_and_tokens_are_refused_not_panicked_on() {
        for url in [
            "temporal:///namespaces/ns/workflows/w/history",
            "temporal:///namespaces/ns/workflows/w/r/history?eventID=x",
            "http://x/namespaces/ns/workflows/w/r/history",
            "temporal:///namespaces/%zz/workflows/w/r/history",
            "temporal:///namespaces/%/workflows/w/r/history",
        ] {
            let l = nexus::Link {
                url: url.into(),
                r#type: WORKFLOW_EVENT_TYPE.into(),
            };
            assert_eq!(parse_workflow_event(&l), None, "{url}");
        }
        for token in ["", "0", "zz", "é1", "0a0b"] {
            assert_eq!(decode_callback_token(token), None, "{token}");
        }
        let token = pb::NexusCallbackToken {
            namespace_id: "n".into(),
            workflow_id: "w".into(),
            run_id: "r".into(),
            scheduled_event_id: 5,
            request_id: "q".into(),
        };
        assert_eq!(
            decode_callback_token(&encode_callback_token(&token)),
            Some(token)
        );
    }
}
