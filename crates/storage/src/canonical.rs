//! A canonical form of protobuf bytes for hashing: map entries sorted. prost encodes a map field
//! in its `HashMap`'s iteration order, which differs between processes (and between maps), and
//! Temporal's messages (memos, search attributes, headers, payload metadata, marker details)
//! are generated with `HashMap`s; so two replicas holding the same state can store different
//! bytes. Walking the wire format with the message's descriptor, every map field's entries are
//! put in byte order (recursively), everything else is kept as encoded.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::Type;

#[derive(Default)]
struct MessageSchema {
    /// Field number → the message type of a message-typed field, and whether it is a map.
    fields: HashMap<u32, (String, bool)>,
}

type Schema = HashMap<String, MessageSchema>;

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let set = prost_types::FileDescriptorSet::decode(chronicle_proto::CHRONICLE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let mut schema = Schema::new();
        for file in &set.file {
            let prefix = match file.package() {
                "" => String::new(),
                p => format!(".{p}"),
            };
            for message in &file.message_type {
                add_message(&mut schema, &prefix, message);
            }
        }
        schema
    })
}

fn add_message(schema: &mut Schema, prefix: &str, message: &prost_types::DescriptorProto) {
    let name = format!("{prefix}.{}", message.name());
    let maps: Vec<String> = message
        .nested_type
        .iter()
        .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
        .map(|n| format!("{name}.{}", n.name()))
        .collect();
    let mut entry = MessageSchema::default();
    for field in &message.field {
        if field.r#type() == Type::Message {
            let type_name = field.type_name().to_string();
            let is_map = maps.contains(&type_name);
            entry
                .fields
                .insert(field.number() as u32, (type_name, is_map));
        }
    }
    for nested in &message.nested_type {
        add_message(schema, &name, nested);
    }
    schema.insert(name, entry);
}

fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The canonical bytes of an encoded message of type `type_name` (a full name with a leading
/// dot, e.g. `.chronicle.persistence.v1.HistoryBatch`). Bytes that do not parse, and types
/// not in the descriptor set, are returned as they are.
pub fn canonical(bytes: &[u8], type_name: &str) -> Vec<u8> {
    match schema().get(type_name) {
        Some(message) => canonical_message(bytes, message).unwrap_or_else(|| bytes.to_vec()),
        None => bytes.to_vec(),
    }
}

fn canonical_message(bytes: &[u8], message: &MessageSchema) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    // Map entries by field number, canonical themselves, emitted sorted after the other fields.
    let mut maps: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let key = varint(bytes, &mut pos)?;
        let (number, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => {
                varint(bytes, &mut pos)?;
            }
            1 => pos = pos.checked_add(8)?,
            5 => pos = pos.checked_add(4)?,
            2 => {
                let len = usize::try_from(varint(bytes, &mut pos)?).ok()?;
                let body = bytes.get(pos..pos.checked_add(len)?)?;
                pos += len;
                if let Some((type_name, is_map)) = message.fields.get(&number) {
                    let inner = schema()
                        .get(type_name)
                        .and_then(|m| canonical_message(body, m))
                        .unwrap_or_else(|| body.to_vec());
                    if *is_map {
                        maps.push((number, inner));
                    } else {
                        put_varint(&mut out, key);
                        put_varint(&mut out, inner.len() as u64);
                        out.extend_from_slice(&inner);
                    }
                    continue;
                }
            }
            _ => return None,
        }
        out.extend_from_slice(bytes.get(start..pos)?);
    }
    maps.sort();
    for (number, entry) in maps {
        put_varint(&mut out, (u64::from(number) << 3) | 2);
        put_varint(&mut out, entry.len() as u64);
        out.extend_from_slice(&entry);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_proto::chronicle::persistence::v1 as pb;
    use chronicle_proto::temporal::api::common::v1::{Memo, Payload};

    fn memo(keys: &[&str]) -> Memo {
        Memo {
            fields: keys
                .iter()
                .map(|k| {
                    (
                        k.to_string(),
                        Payload {
                            metadata: [("encoding", "json/plain"), ("k", k), ("z", "1")]
                                .iter()
                                .map(|(a, b)| (a.to_string(), b.as_bytes().to_vec()))
                                .collect(),
                            data: k.as_bytes().to_vec(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn maps_encoded_in_any_order_have_one_canonical_form() {
        let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let mut reversed = keys;
        reversed.reverse();
        let state = |keys: &[&str]| pb::WorkflowExecutionState {
            workflow_id: "wf".into(),
            memo: Some(memo(keys)),
            next_event_id: 7,
            ..Default::default()
        };
        let forms: std::collections::HashSet<Vec<u8>> = (0..20)
            .map(|i| {
                let keys = if i % 2 == 0 { &keys } else { &reversed };
                canonical(
                    &state(keys).encode_to_vec(),
                    ".chronicle.persistence.v1.WorkflowExecutionState",
                )
            })
            .collect();
        assert_eq!(forms.len(), 1, "one canonical form");
        // Raw encodings of equal states differ (the HashMap order), which is why this exists.
        let raw: std::collections::HashSet<Vec<u8>> = (0..20)
            .map(|i| state(if i % 2 == 0 { &keys } else { &reversed }).encode_to_vec())
            .collect();
        assert!(raw.len() > 1, "prost encodes HashMaps in their own order");
        // A different state has a different canonical form.
        let other = canonical(
            &state(&keys[..7]).encode_to_vec(),
            ".chronicle.persistence.v1.WorkflowExecutionState",
        );
        assert!(!forms.contains(&other));
        // The canonical form decodes to the same state.
        let one = forms.into_iter().next().unwrap();
        assert_eq!(
            pb::WorkflowExecutionState::decode(one.as_slice()).unwrap(),
            state(&keys)
        );
    }
}
