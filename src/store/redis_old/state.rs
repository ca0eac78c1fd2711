//! Reading a canvas for a join or the API: its head, presence and resume check in one script
//! (`snapshot.lua`), with the objects when they are small; a big state scanned a chunk at a time and caught
//! up with the log (`state_tail.lua`), so Redis, which runs one command at a time for every instance, is
//! never held for a whole state.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use redis::Value;
use serde_json::value::RawValue;

use super::entry::{array, optional, pairs, string, text, uint};
use super::scripts::{SNAPSHOT, SNAPSHOT_SOURCE, STATE_TAIL};
use super::{keys, malformed, unavailable, RedisBus};
use crate::bus::{BusError, Peer, Present, ReadObjects, Snapshot, Unavailable};
use crate::object_ops::JsonObject;
use crate::protocol::{to_json, CanvasId, Resume};

/// Objects per HSCAN chunk: about 1 ms of Redis's time for objects of ~100 bytes (Redis does one command at a
/// time for every instance: the chunk is what another canvas's commit may wait behind). Measured on a
/// 100,000-object canvas with another canvas's latency load running (docs/BENCHMARKS.md): chunks of 5,000
/// joined ~60 ms sooner but lifted the other canvas's p99 from ~8 to ~15 ms.
const SCAN_COUNT: usize = 1000;
/// Scans tried before a state that keeps being reset or trimmed under the scan is read in one MULTI.
const SCAN_ATTEMPTS: usize = 3;

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
    peers: Vec<Peer>,
}

impl Head {
    fn into_snapshot(self, objects: Option<Bytes>) -> Snapshot {
        Snapshot {
            epoch: self.epoch,
            generation: self.generation,
            seq: self.seq,
            version: self.version,
            presence: self.presence,
            peers: self.peers,
            resumed: self.resumed,
            objects,
        }
    }
}

impl RedisBus {
    /// `snapshot.lua`: head, presence, resume check, and the objects if at most `read.up_to` bytes.
    pub(super) async fn script_snapshot(
        &self,
        canvas: &CanvasId,
        resume: Option<&Resume>,
        read: ReadObjects,
    ) -> Result<Snapshot, BusError> {
        let (resume_epoch, since) = resume.map_or((String::new(), 0), |r| (r.epoch.clone(), r.since));
        let cached = read.unless.as_ref().map_or(String::new(), |key| format!("{}:{}", key.epoch, key.version));
        let args = [
            canvas.as_str().to_owned(),
            Self::candidate(),
            resume_epoch,
            since.to_string(),
            self.inner.max_resume.to_string(),
            self.inner.ttl_ms.to_string(),
            cached,
            read.up_to.to_string(),
        ];
        let reply: Value = self
            .read_twice(|mut conn| {
                let args = &args;
                async move { SNAPSHOT.arg(&args[..]).invoke_async(&mut conn).await }
            })
            .await?;
        let (head, inline_objects) = parse_snapshot(array(&reply).unwrap_or_default())?;
        self.inner.link.observe_epoch(&head.store_epoch, &self.inner.hub);
        let objects = match (head.resumed, inline_objects) {
            (false, Some(objects)) => Some(objects_json(pairs(objects).ok_or_else(|| malformed("a state read"))?)),
            _ => None,
        };
        Ok(head.into_snapshot(objects))
    }

    /// The whole state of a canvas: its objects read in chunks (HSCAN), then the objects the ops since the
    /// scan began changed, with the head, at one point of the log (`state_tail.lua`). Each step holds Redis
    /// for a chunk, never for the whole state, so a join of a 100,000-object canvas does not stall every
    /// other canvas's commits. Read whole in one MULTI when the log cannot say what changed meanwhile.
    pub(super) async fn whole_state(&self, canvas: &CanvasId) -> Result<Snapshot, BusError> {
        for _ in 0..SCAN_ATTEMPTS {
            let start = self.script_snapshot(canvas, None, ReadObjects { unless: None, up_to: 0 }).await?;
            let mut objects = self.scan_objects(canvas).await?;
            let reply: Value = self
                .read_twice(|mut conn| {
                    let (generation, seq) = (start.generation, start.seq);
                    async move {
                        STATE_TAIL
                            .arg(canvas.as_str())
                            .arg(Self::candidate())
                            .arg(generation)
                            .arg(seq)
                            .invoke_async(&mut conn)
                            .await
                    }
                })
                .await?;
            let status =
                array(&reply).and_then(|items| text(items.first()?)).ok_or_else(|| malformed("a state read"))?;
            match status {
                "moved" => continue,
                "legacy" => break,
                _ => {}
            }
            // The status is first (checked above, so there is one); the snapshot's fields follow it.
            let (head, changed) = parse_snapshot(&array(&reply).unwrap_or_default()[1..])?;
            self.inner.link.observe_epoch(&head.store_epoch, &self.inner.hub);
            for pair in array(changed.ok_or_else(|| malformed("a state read"))?).unwrap_or_default().chunks_exact(2) {
                let id = text(&pair[0]).ok_or_else(|| malformed("a state read"))?.to_owned();
                match text(&pair[1]) {
                    Some(object) => drop(objects.insert(id, object.to_owned())),
                    None => drop(objects.remove(&id)),
                }
            }
            // Joining 100,000 strings into 10 MB of JSON, and freeing them, takes a worker ~20 ms: done on a
            // blocking thread, as SQLite's reads are, so this instance's other sessions keep being served.
            let json = tokio::task::spawn_blocking(move || {
                objects_json(objects.iter().map(|(id, object)| (id.as_str(), object.as_str())).collect())
            });
            let json = json.await.map_err(|_| BusError::from(Unavailable::ReadLost))?;
            return Ok(head.into_snapshot(Some(json)));
        }
        self.atomic_whole_state(canvas).await
    }

    /// A canvas's objects, scanned a chunk at a time (an object changed meanwhile may be seen either way).
    /// The next chunk is asked for before this one is taken apart, so Redis scans while the relay sorts.
    async fn scan_objects(&self, canvas: &CanvasId) -> Result<HashMap<String, String>, BusError> {
        let key = keys::objects(canvas);
        let scan = |cursor: String| {
            let key = &key;
            self.read_twice(move |mut conn| {
                let cursor = cursor.clone();
                async move {
                    redis::cmd("HSCAN")
                        .arg(key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async::<Value>(&mut conn)
                        .await
                }
            })
        };
        let mut objects = HashMap::new();
        let mut reply = scan("0".to_owned()).await?;
        loop {
            // Taken apart by value: the strings move into the map, nothing is copied per object.
            let Value::Array(parts) = reply else { return Err(malformed("a state scan")) };
            let [next, Value::Array(chunk)] = <[Value; 2]>::try_from(parts).map_err(|_| malformed("a state scan"))?
            else {
                return Err(malformed("a state scan"));
            };
            let cursor = string(&next).ok_or_else(|| malformed("a state scan"))?;
            let take = || {
                let mut chunk = chunk.into_iter().map(owned_text);
                while let (Some(id), Some(object)) = (chunk.next(), chunk.next()) {
                    objects.insert(
                        id.ok_or_else(|| malformed("a state scan"))?,
                        object.ok_or_else(|| malformed("a state scan"))?,
                    );
                }
                Ok::<(), BusError>(())
            };
            if cursor == "0" {
                take()?;
                return Ok(objects);
            }
            // `join` polls the request first, which hands it to the connection's task; the yield lets that task
            // send it (this worker may be the only one) before this chunk is taken apart meanwhile.
            let (next_reply, taken) = tokio::join!(scan(cursor), async {
                tokio::task::yield_now().await;
                take()
            });
            taken?;
            reply = next_reply?;
        }
    }

    /// The whole state in one MULTI beside the snapshot script: exact, but Redis is held for all of it.
    async fn atomic_whole_state(&self, canvas: &CanvasId) -> Result<Snapshot, BusError> {
        let mut script = redis::cmd("EVAL");
        script.arg(SNAPSHOT_SOURCE.as_str()).arg(0);
        script.arg(canvas.as_str()).arg(Self::candidate()).arg("").arg(0).arg(0).arg(self.inner.ttl_ms).arg("").arg(0);
        let mut pipe = redis::pipe();
        pipe.atomic().add_command(script).hgetall(keys::objects(canvas));
        let replies: Vec<Value> = self
            .read_twice(|mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let (head, _) =
            parse_snapshot(array(replies.first().ok_or_else(|| malformed("a snapshot"))?).unwrap_or_default())?;
        self.inner.link.observe_epoch(&head.store_epoch, &self.inner.hub);
        let objects =
            pairs(replies.get(1).ok_or_else(|| malformed("a state read"))?).ok_or_else(|| malformed("a state read"))?;
        Ok(head.into_snapshot(Some(objects_json(objects))))
    }

    /// Runs a read on the state connection, and once more if the first try found the connection broken: the
    /// state connection can sit idle through a Redis restart, and a read is safe to repeat.
    pub(super) async fn read_twice<T, F, Fut>(&self, read: F) -> Result<T, BusError>
    where
        F: Fn(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match read(self.state_conn()).await {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                read(self.state_conn()).await.map_err(unavailable)
            }
            result => result.map_err(unavailable),
        }
    }
}

/// `snapshot.lua`'s reply: the head and presence, and the objects reply if the script read them.
fn parse_snapshot(reply: &[Value]) -> Result<(Head, Option<&Value>), BusError> {
    let parse = || {
        let [epoch, generation, seq, version, _bytes, resumed, users, names, objects, read, peers, states]: &[Value;
             12] = reply.try_into().ok()?;
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
        let states: HashMap<&str, &str> = pairs(states)?.into_iter().collect();
        let peers = pairs(peers)?
            .into_iter()
            .filter_map(|(conn, who)| {
                let (user, name) = who.split_once('\n')?;
                Some(Peer {
                    connection: conn.to_owned(),
                    user: user.to_owned(),
                    name: optional(name).map(str::to_owned),
                    data: states.get(conn).and_then(|data| RawValue::from_string((*data).to_owned()).ok()),
                })
            })
            .collect();
        let head = Head {
            epoch: format!("{store_epoch}-{generation}"),
            store_epoch,
            generation,
            seq: uint(seq)?,
            version: uint(version)?,
            resumed: uint(resumed)? == 1,
            presence,
            peers,
        };
        Some((head, (uint(read)? == 1).then_some(objects)))
    };
    parse().ok_or_else(|| malformed("a snapshot"))
}

/// A bulk string's text, taken without copying.
fn owned_text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// Objects as (id, JSON text as stored) as one JSON object (see `JsonObject`); nothing is parsed.
fn objects_json(objects: Vec<(&str, &str)>) -> Bytes {
    let mut json = JsonObject::with_capacity(objects.iter().map(|(id, data)| id.len() + data.len() + 4).sum());
    for (id, data) in objects {
        json.push(id, data.as_bytes());
    }
    json.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::redis::entry::bulk;

    #[test]
    fn objects_are_assembled_from_their_stored_json_texts_exactly() {
        let reply = Value::Array(vec![
            bulk("b"),
            bulk(r#"{"id":"b","x":1.0000000000000002e-187}"#),
            bulk("a\"q"),
            bulk(r#"{"id":"a\"q","tags":[]}"#),
        ]);
        let json = objects_json(pairs(&reply).unwrap());
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["b"]["x"].as_f64(), Some(1.0000000000000002e-187));
        assert_eq!(parsed["a\"q"]["tags"], serde_json::json!([]));
        assert!(std::str::from_utf8(&json).unwrap().contains("1.0000000000000002e-187"), "numbers are kept as written");
        assert_eq!(&objects_json(Vec::new())[..], b"{}");
    }
}
