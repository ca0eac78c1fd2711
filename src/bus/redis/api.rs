//! Reads of one canvas at one point of its log (`snapshot.lua`, `messages.lua`), the users API, and the
//! two API writes that are not logged messages: resetting a canvas and messaging a user.

use std::collections::BTreeMap;

use redis::Value;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::entry::{array, pairs, LogEntry};
use super::scripts::{MESSAGES, RESET, SNAPSHOT, TO_USER, USERS};
use super::entry::{items, string, uint};
use super::{unavailable, RedisBus};
use crate::bus::{BusError, CanvasLog, CanvasState, Present, UserPresence};
use crate::protocol::{to_json, CanvasId, Resume, UserId};

/// A canvas read by `snapshot.lua`.
pub(super) struct Snapshot {
    pub store_epoch: String,
    pub generation: u64,
    pub seq: u64,
    pub resumed: bool,
    pub replay: Vec<Message>,
    pub presence: Vec<Present>,
    /// The canvas state at `seq`, as the welcome's JSON object (when asked for and not resumed).
    pub objects: Option<Box<RawValue>>,
}

impl Snapshot {
    pub fn presence_json(&self) -> Box<RawValue> {
        RawValue::from_string(to_json(&self.presence)).expect("serde_json writes valid JSON")
    }
}

fn malformed(what: &str) -> BusError {
    BusError::Unavailable(format!("Redis: unexpected reply to {what}"))
}

impl RedisBus {
    /// Reads a canvas at its head, with the resume replay when `resume` matches.
    pub(super) async fn snapshot(&self, canvas: &CanvasId, resume: Option<&Resume>, objects: bool) -> Result<Snapshot, BusError> {
        let (resume_epoch, since) = resume.map_or((String::new(), 0), |r| (r.epoch.clone(), r.since));
        let reply: Value = SNAPSHOT
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(resume_epoch)
            .arg(since)
            .arg(self.inner.max_resume)
            .arg(self.inner.ttl_ms)
            .arg(if objects { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let parse = || {
            let [epoch, generation, seq, resumed, replay, users, names, objects] = items::<8>(&reply)?;
            let store_epoch = string(epoch)?;
            let replay = LogEntry::parse_all(replay).iter().map(|e| e.frame(canvas.as_str(), &store_epoch)).collect();
            let names: BTreeMap<&str, &str> = pairs(names)?.into_iter().collect();
            let mut presence: Vec<Present> = pairs(users)?
                .into_iter()
                .map(|(user, count)| Present {
                    user: user.to_owned(),
                    name: names.get(user).map(|name| (*name).to_owned()),
                    connections: count.parse().unwrap_or(0),
                })
                .collect();
            presence.sort_by(|a, b| a.user.cmp(&b.user));
            Some((store_epoch, uint(generation)?, uint(seq)?, uint(resumed)? == 1, replay, presence, objects))
        };
        let (store_epoch, generation, seq, resumed, replay, presence, objects_reply) =
            parse().ok_or_else(|| malformed("a snapshot"))?;
        let objects = match objects && !resumed {
            true => Some(objects_json(objects_reply).ok_or_else(|| malformed("a snapshot's objects"))?),
            false => None,
        };
        Ok(Snapshot { store_epoch, generation, seq, resumed, replay, presence, objects })
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    pub async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        let reply: Value = MESSAGES
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(since)
            .arg(limit)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [epoch, generation, seq, entries] = items::<4>(&reply).ok_or_else(|| malformed("a log read"))?;
        let (store_epoch, generation, seq) = (string(epoch), uint(generation), uint(seq));
        let (Some(store_epoch), Some(generation), Some(seq)) = (store_epoch, generation, seq) else {
            return Err(malformed("a log read"));
        };
        let messages = LogEntry::parse_all(entries)
            .iter()
            .map(|e| e.frame(canvas.as_str(), &store_epoch).into_text().map(|t| t.to_string()).unwrap_or_default())
            .collect();
        Ok(CanvasLog { epoch: format!("{store_epoch}-{generation}"), seq, messages })
    }

    /// A canvas's head, objects and presence, read in one script.
    pub async fn canvas(&self, canvas: CanvasId) -> Result<CanvasState, BusError> {
        let snap = self.snapshot(&canvas, None, true).await?;
        Ok(CanvasState {
            epoch: format!("{}-{}", snap.store_epoch, snap.generation),
            seq: snap.seq,
            objects: snap.objects.unwrap_or_else(|| RawValue::from_string("{}".into()).expect("valid")),
            presence: snap.presence,
        })
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    pub async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        let reply: Value = USERS
            .arg(only.as_ref().map_or("", UserId::as_str))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let parse = || {
            let mut users = array(&reply)?
                .chunks_exact(3)
                .map(|user| {
                    let mut canvases: Vec<String> = array(&user[2])?.iter().filter_map(string).collect();
                    canvases.sort();
                    Some(UserPresence { user: string(&user[0])?, connections: uint(&user[1])?, canvases })
                })
                .collect::<Option<Vec<_>>>()?;
            users.sort_by(|a, b| a.user.cmp(&b.user));
            Some(users)
        };
        parse().ok_or_else(|| malformed("a users read"))
    }

    /// Resets a canvas: a new generation at seq 0, log and objects dropped. Every instance's readers see the
    /// reset marker and send connected clients `reset`. Returns the new epoch.
    pub async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let reply: Value = RESET
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(self.inner.ttl_ms)
            .arg(&self.inner.instance_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [epoch, generation] = items::<2>(&reply).ok_or_else(|| malformed("a reset"))?;
        let (Some(epoch), Some(generation)) = (string(epoch), uint(generation)) else { return Err(malformed("a reset")) };
        self.inner.shared.observe_epoch(&epoch, &self.inner.hub);
        Ok(format!("{epoch}-{generation}"))
    }

    /// Sends a frame to every connection of `user` on every instance: this process's at once, the others'
    /// through the shared user-message stream. Returns how many connections the user has.
    pub async fn send_to_user(&self, user: UserId, frame: String) -> Result<u64, BusError> {
        let connections: u64 = TO_USER
            .arg(user.as_str())
            .arg(&frame)
            .arg(&self.inner.instance_id)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.inner.hub.send_to_user(user.as_str(), &Message::text(frame));
        Ok(connections)
    }
}

/// `{ id, {field, value, ...}, ... }` as the canvas's objects, `{"id":{"field":value,...},...}`, ids and
/// fields sorted. Values are the JSON text each field arrived as.
fn objects_json(reply: &Value) -> Option<Box<RawValue>> {
    let items = array(reply)?;
    let mut objects: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for object in items.chunks_exact(2) {
        let id = super::entry::text(&object[0])?;
        objects.insert(id, pairs(&object[1])?.into_iter().collect());
    }
    let mut json = String::from("{");
    for (n, (id, fields)) in objects.iter().enumerate() {
        if n > 0 {
            json.push(',');
        }
        json.push_str(&to_json(id));
        json.push_str(":{");
        for (m, (field, value)) in fields.iter().enumerate() {
            if m > 0 {
                json.push(',');
            }
            json.push_str(&to_json(field));
            json.push(':');
            json.push_str(value);
        }
        json.push('}');
    }
    json.push('}');
    RawValue::from_string(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn objects_are_assembled_from_their_fields_json_text_exactly() {
        let object = |id: &str, fields: &[(&str, &str)]| {
            let fields = fields.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect();
            [bulk(id), Value::Array(fields)]
        };
        let reply = Value::Array(
            [object("b", &[("id", "\"b\""), ("x", "1.0000000000000002e-187")]), object("a\"q", &[("id", "\"a\\\"q\""), ("tags", "[]")])]
                .concat(),
        );
        let json = objects_json(&reply).unwrap();
        assert_eq!(json.get(), r#"{"a\"q":{"id":"a\"q","tags":[]},"b":{"id":"b","x":1.0000000000000002e-187}}"#);
        assert_eq!(objects_json(&Value::Array(vec![])).unwrap().get(), "{}");
    }
}
