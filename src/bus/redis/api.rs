//! Reads of one canvas at one point of its log (`snapshot.lua`, `messages.lua`) and of a joiner's replay, the
//! users API, and the two API writes that are not logged messages: resetting a canvas and messaging a user.

use std::collections::BTreeMap;

use bytes::Bytes;
use redis::Value;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::entry::{array, items, pairs, stream_id, string, text, uint, LogEntry};
use super::scripts::{MESSAGES, RESET, SNAPSHOT, SNAPSHOT_SOURCE, TO_USER, USERS};
use super::{keys, unavailable, RedisBus};
use crate::bus::{BusError, CanvasLog, Present, ReadObjects, Snapshot, UserPresence};
use crate::protocol::{to_json, CanvasId, Resume, UserId};

/// How a snapshot's reply reads: `snapshot.lua`'s fields.
struct Head {
    /// The store's epoch, and the canvas's (the store's and the generation).
    store_epoch: String,
    epoch: String,
    generation: u64,
    seq: u64,
    version: u64,
    resumed: bool,
    presence: Box<RawValue>,
}

fn malformed(what: &str) -> BusError {
    BusError::Unavailable(format!("Redis: unexpected reply to {what}"))
}

impl RedisBus {
    /// A canvas at its head, read atomically on the state connection. Objects small enough for the caller
    /// come back from the script; a caller that wants them whatever their size gets them from one HGETALL in
    /// the same MULTI as the script, so Redis never folds a big state through a Lua table.
    pub async fn snapshot(&self, canvas: &CanvasId, resume: Option<&Resume>, read: ReadObjects) -> Result<Snapshot, BusError> {
        let (resume_epoch, since) = resume.map_or((String::new(), 0), |r| (r.epoch.clone(), r.since));
        let cached = read.unless.as_ref().map_or(String::new(), |key| format!("{}:{}", key.epoch, key.version));
        let whole = read.up_to == usize::MAX;
        let inline = if whole { 0 } else { read.up_to };
        let args = [
            canvas.as_str().to_owned(),
            Self::candidate(),
            resume_epoch,
            since.to_string(),
            self.inner.max_resume.to_string(),
            self.inner.ttl_ms.to_string(),
            cached,
            inline.to_string(),
        ];
        let replies: Vec<Value> = if whole {
            // The script and the whole state in one MULTI: the objects are those at the script's seq.
            let mut script = redis::cmd("EVAL");
            script.arg(SNAPSHOT_SOURCE.as_str()).arg(0).arg(&args[..]);
            let mut pipe = redis::pipe();
            pipe.atomic().add_command(script).hgetall(keys::objects(canvas));
            self.read_twice(|mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?
        } else {
            let reply = self.read_twice(|mut conn| {
                let args = &args;
                async move { SNAPSHOT.arg(&args[..]).invoke_async(&mut conn).await }
            });
            vec![reply.await?]
        };
        let (head, inline_objects) = parse_snapshot(replies.first().ok_or_else(|| malformed("a snapshot"))?)?;
        self.inner.shared.observe_epoch(&head.store_epoch, &self.inner.hub);
        let objects = match (head.resumed, whole, inline_objects) {
            (true, _, _) => None,
            (false, true, _) => Some(objects_json(replies.get(1).ok_or_else(|| malformed("a state read"))?)?),
            (false, false, Some(objects)) => Some(objects_json(objects)?),
            (false, false, None) => None,
        };
        Ok(Snapshot {
            epoch: head.epoch,
            generation: head.generation,
            seq: head.seq,
            version: head.version,
            presence: head.presence,
            resumed: head.resumed,
            objects,
        })
    }

    /// Runs a read on the state connection, and once more if the first try found the connection broken: the
    /// state connection can sit idle through a Redis restart, and a read is safe to repeat.
    async fn read_twice<T, F, Fut>(&self, read: F) -> Result<T, BusError>
    where
        F: Fn(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match read(self.state_conn()).await {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => read(self.state_conn()).await.map_err(unavailable),
            result => result.map_err(unavailable),
        }
    }

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas, as its stream still holds them.
    pub async fn replay_page(&self, canvas: &CanvasId, generation: u64, after: u64, upto: u64) -> Result<Vec<Message>, BusError> {
        let mut range = redis::cmd("XRANGE");
        range.arg(keys::log(canvas)).arg(stream_id(generation, after + 1)).arg(stream_id(generation, upto));
        let reply: Value = self
            .read_twice(|mut conn| {
                let range = &range;
                async move { range.query_async(&mut conn).await }
            })
            .await?;
        let epoch = self.inner.shared.epoch().unwrap_or_default();
        Ok(LogEntry::parse_all(&reply).iter().map(|e| e.frame(canvas.as_str(), &epoch)).collect())
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

/// `snapshot.lua`'s reply: the head and presence, and the objects reply if the script read them.
fn parse_snapshot(reply: &Value) -> Result<(Head, Option<&Value>), BusError> {
    let parse = || {
        let [epoch, generation, seq, version, _bytes, resumed, users, names, objects, read] = items::<10>(reply)?;
        let (store_epoch, generation) = (string(epoch)?, uint(generation)?);
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
        let presence = RawValue::from_string(to_json(&presence)).ok()?;
        let head = Head {
            epoch: format!("{store_epoch}-{generation}"),
            store_epoch,
            generation,
            seq: uint(seq)?,
            version: uint(version)?,
            resumed: uint(resumed)? == 1,
            presence,
        };
        Some((head, (uint(read)? == 1).then_some(objects)))
    };
    parse().ok_or_else(|| malformed("a snapshot"))
}

/// `{ id, JSON, ... }` (HGETALL of a canvas's objects) as one JSON object, `{"id":JSON,...}`. Each value is
/// the object's JSON text as stored; nothing is parsed.
fn objects_json(reply: &Value) -> Result<Bytes, BusError> {
    let items = array(reply).ok_or_else(|| malformed("a state read"))?;
    let size: usize = items.iter().map(|item| text(item).map_or(0, str::len) + 4).sum();
    let mut json = Vec::with_capacity(size + 2);
    json.push(b'{');
    for object in items.chunks_exact(2) {
        let (Some(id), Some(data)) = (text(&object[0]), text(&object[1])) else { return Err(malformed("a state read")) };
        if json.len() > 1 {
            json.push(b',');
        }
        json.extend_from_slice(to_json(&id).as_bytes());
        json.push(b':');
        json.extend_from_slice(data.as_bytes());
    }
    json.push(b'}');
    Ok(Bytes::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn objects_are_assembled_from_their_stored_json_texts_exactly() {
        let reply = Value::Array(vec![bulk("b"), bulk(r#"{"id":"b","x":1.0000000000000002e-187}"#), bulk("a\"q"), bulk(r#"{"id":"a\"q","tags":[]}"#)]);
        let json = objects_json(&reply).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["b"]["x"].as_f64(), Some(1.0000000000000002e-187));
        assert_eq!(parsed["a\"q"]["tags"], serde_json::json!([]));
        assert!(std::str::from_utf8(&json).unwrap().contains("1.0000000000000002e-187"), "numbers are kept as written");
        assert_eq!(&objects_json(&Value::Array(vec![])).unwrap()[..], b"{}");
    }
}
