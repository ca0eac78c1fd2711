//! How a batch travels to `publish.lua` and back: the arguments of each publish (the script's header comment
//! is the format) and the script's reply, read into one outcome per publish. The publisher task that sends
//! batches and resends unanswered ones is `publisher.rs`.

use redis::Value;

use super::entry::{array, encode_optional, int, text};
use crate::bus::committed::{Logged, Outcome};
use crate::bus::{Origin, PresenceChange, Publish};
use crate::object_ops::{self, ObjectOp, Refusal};
use crate::protocol::to_json;

/// Adds one publish's arguments (see the header of `publish.lua`), or says why it cannot be sent, adding
/// nothing.
pub(super) fn encode(publish: &Publish, invocation: &mut redis::ScriptInvocation<'_>) -> Result<(), Refusal> {
    let (op, conn, reference, name) = match &publish.origin {
        Origin::Presence { change, conn, name, .. } => {
            let (op, dead_after) = match change {
                PresenceChange::Connect => ("connect", String::new()),
                PresenceChange::Disconnect => ("disconnect", String::new()),
                PresenceChange::Expire { dead_after_ms } => ("expire", dead_after_ms.to_string()),
            };
            (op, conn.to_string(), dead_after, encode_optional(name.as_deref()))
        }
        Origin::Socket { conn, reference, .. } => {
            ("log", conn.to_string(), encode_optional(reference.as_deref()), String::new())
        }
        Origin::Caller(_) => ("log", String::new(), String::new(), String::new()),
    };
    let (op, id) = match &publish.object {
        Some(ObjectOp::Create { id, .. }) => ("create", id.as_str()),
        Some(ObjectOp::Update { id, .. }) => ("update", id.as_str()),
        Some(ObjectOp::Delete { id }) => ("delete", id.as_str()),
        None => (op, ""),
    };
    // The op's top-level fields, each name as JSON and each value as the exact JSON text it arrived as: an
    // update's as the protocol read them; a create's read here, because this store keeps each object as a
    // hash of its fields (the protocol reads only the id of a create). Deletes have none.
    let data = publish.data.get();
    let create_fields;
    let fields = match &publish.object {
        Some(ObjectOp::Create { id }) => {
            // The protocol checked that the data is a JSON object; should that ever not hold, the create is
            // refused rather than stored with no fields.
            let unreadable =
                |error: serde_json::Error| Refusal::Unreadable { id: id.clone(), reason: error.to_string() };
            create_fields = object_ops::fields(data).map_err(unreadable)?;
            &create_fields[..]
        }
        Some(op) => op.fields(),
        None => &[],
    };
    invocation
        .arg(op)
        .arg(publish.canvas.as_str())
        .arg(publish.kind.as_str())
        .arg(publish.from.as_str())
        .arg(publish.data.get())
        .arg(conn)
        .arg(reference)
        .arg(name)
        .arg(id)
        .arg(to_json(&id).len())
        .arg(fields.len())
        .arg(publish.idempotency_key.as_ref().map_or("", |key| key.as_str()));
    for field in fields {
        invocation.arg(to_json(&field.name(data))).arg(field.value(data));
    }
    Ok(())
}

/// What `publish.lua` answered for a batch.
#[derive(Debug)]
pub(super) enum Reply {
    /// Applied in the store of this epoch: one outcome per publish.
    Applied { epoch: String, writes: u64, now: i64, outcomes: Vec<Outcome> },
    /// Not applied: the store has this epoch, not the one the batch was for.
    OtherEpoch(String),
}

/// `{ epoch, writes, now, seq, generation, ... }`, one outcome per publish of `batch`, or `{ epoch }` alone
/// (`limit`: the `--max-canvas-state` the script checked against).
pub(super) fn parse(reply: &Value, batch: &[Publish], limit: usize) -> Option<Reply> {
    let items = array(reply)?;
    let [epoch, writes, now, results @ ..] = items else {
        let [epoch] = items else { return None };
        return Some(Reply::OtherEpoch(text(epoch)?.to_owned()));
    };
    if results.len() != batch.len() * 2 {
        return None;
    }
    let outcomes = results
        .chunks_exact(2)
        .zip(batch)
        .map(|(pair, publish)| {
            Some(match int(&pair[0])? {
                -1 => {
                    let id = publish.object.as_ref().map_or("", ObjectOp::id).to_owned();
                    Outcome::Refused(Refusal::Missing { id })
                }
                -2 => Outcome::Refused(Refusal::CanvasFull { size: None, limit }),
                -3 => Outcome::Duplicate { seq: int(&pair[1])? as u64 },
                0 => Outcome::Unlogged { changed: true },
                -4 => Outcome::Unlogged { changed: false },
                seq => Outcome::Logged(Logged { seq: seq as u64, generation: int(&pair[1])? as u64, id: seq }),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let (epoch, writes, now) = (text(epoch)?.to_owned(), int(writes)? as u64, int(now)?);
    Some(Reply::Applied { epoch, writes, now, outcomes })
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::bus::redis::entry::bulk;
    use crate::protocol::{CanvasId, LoggedMessage, UserId};

    /// A publish as the API makes one: checked by the protocol (object ops carry their id).
    fn publish(kind: &str, data: &str) -> Publish {
        let message =
            LoggedMessage::new(kind, serde_json::value::RawValue::from_string(data.into()).unwrap(), None).unwrap();
        let (canvas, from) = (CanvasId::parse("c").unwrap(), UserId::parse("u").unwrap());
        Publish::message(canvas, message, from, Origin::Caller(oneshot::channel().0))
    }

    #[test]
    fn a_reply_maps_to_one_outcome_per_publish_or_to_nothing() {
        let reply = Value::Array(
            [
                bulk("store"),
                Value::Int(9),
                Value::Int(1700),
                Value::Int(12),
                Value::Int(3),
                Value::Int(-1),
                Value::Int(0),
            ]
            .into_iter()
            .chain([Value::Int(-2), Value::Int(0), Value::Int(0), Value::Int(0)])
            .collect(),
        );
        let batch = [
            publish("note", "1"),
            publish("object-update", r#"{"id":"gone"}"#),
            publish("object-create", r#"{"id":"big"}"#),
            publish("note", "2"),
        ];
        let Some(Reply::Applied { epoch, writes, now, outcomes }) = parse(&reply, &batch, 64) else { panic!() };
        assert_eq!((epoch.as_str(), writes, now), ("store", 9, 1700));
        assert!(matches!(outcomes[0], Outcome::Logged(Logged { seq: 12, generation: 3, id: 12 })));
        assert!(matches!(&outcomes[1], Outcome::Refused(Refusal::Missing { id }) if id == "gone"));
        assert!(matches!(outcomes[2], Outcome::Refused(Refusal::CanvasFull { size: None, limit: 64 })));
        assert!(matches!(outcomes[3], Outcome::Unlogged { changed: true }));
        assert!(parse(&reply, &batch[..2], 64).is_none(), "a reply for another batch size is refused, not misread");
        assert!(parse(&Value::Nil, &[], 64).is_none());
        let duplicate =
            Value::Array([bulk("store"), Value::Int(9), Value::Int(1700), Value::Int(-3), Value::Int(7)].to_vec());
        let Some(Reply::Applied { outcomes, .. }) = parse(&duplicate, &batch[..1], 64) else { panic!() };
        assert!(matches!(outcomes[0], Outcome::Duplicate { seq: 7 }), "a repeated key: the original seq");
        let other = parse(&Value::Array(vec![bulk("new")]), &batch, 64);
        assert!(matches!(other, Some(Reply::OtherEpoch(epoch)) if epoch == "new"), "nothing applied: a new epoch");
    }

    #[test]
    fn a_replayed_reply_of_texts_reads_like_the_first() {
        let reply = Value::Array(["store", "9", "1700", "12", "3"].map(bulk).to_vec());
        let Some(Reply::Applied { writes, outcomes, .. }) = parse(&reply, &[publish("note", "1")], 64) else {
            panic!()
        };
        assert_eq!(writes, 9);
        assert!(matches!(outcomes[0], Outcome::Logged(Logged { seq: 12, generation: 3, id: 12 })));
    }
}
