//! How a committer's batch travels to `commit.lua` and back: the arguments of each canvas's part (the
//! script's header comment is the format) and the script's reply, read into what became of each part. The
//! loop that sends a batch, stages moved canvases again and sends those again is `commit.rs`.

use redis::{ToRedisArgs, Value};

use super::entry::{array, conn_rows, encode_optional, head, int, log_entries, string, text, uint};
use crate::protocol::{CanvasId, ConnId, IdempotencyKey, UserId};
use crate::store::records::{ConnRow, ConnWrite, Expect, Head, LogEntry, Placed, Writes};

/// What every send of a batch carries before its parts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header<'a> {
    pub instance: &'a str,
    /// The batch's number (see `Batch::number`): the same on every send of the batch.
    pub number: u64,
    /// The store epoch the batch is for ('' when the instance knows none yet).
    pub epoch: &'a str,
    /// A fresh epoch, in case the store has none.
    pub candidate: &'a str,
    pub ttl_ms: i64,
    /// How long a part's marker answers a batch sent again.
    pub marker_ttl_ms: i64,
}

/// The arguments of a send, in order, as Redis gets them.
#[derive(Debug, Default)]
pub(super) struct Args(pub Vec<Vec<u8>>);

impl Args {
    fn arg(&mut self, value: impl ToRedisArgs) -> &mut Self {
        value.write_redis_args(&mut self.0);
        self
    }
}

impl Header<'_> {
    pub fn encode(&self, invocation: &mut Args) {
        invocation
            .arg(self.instance)
            .arg(self.number)
            .arg(self.epoch)
            .arg(self.candidate)
            .arg(self.ttl_ms)
            .arg(self.marker_ttl_ms);
    }
}

/// Adds one canvas's part (see the header of `commit.lua`).
pub(super) fn encode(invocation: &mut Args, writes: &Writes<'_>) {
    let expect = match writes.expect {
        Expect::Append => String::new(),
        Expect::Rev(rev) => rev.to_string(),
    };
    let head = writes.head;
    invocation
        .arg(writes.canvas.as_str())
        .arg(expect)
        .arg(writes.known.0)
        .arg(writes.known.1)
        .arg(head.bytes)
        .arg(head.objects)
        .arg(head.connections)
        .arg(head.users)
        .arg(writes.forget_after.map_or_else(String::new, |ms| ms.to_string()))
        .arg(writes.entries.len())
        .arg(writes.conns.len())
        .arg(writes.keys.len());
    for entry in &writes.entries {
        invocation
            .arg(entry.kind)
            .arg(entry.from)
            .arg(entry.data.get())
            .arg(entry.conn.map_or_else(String::new, |conn| conn.to_string()))
            .arg(encode_optional(entry.reference))
            .arg(match (entry.restore, entry.changes_objects) {
                // A restore's ops all change the objects (the fold makes no other).
                (true, _) => "2",
                (false, true) => "1",
                (false, false) => "0",
            });
    }
    for write in writes.conns {
        match write {
            ConnWrite::Put { conn, row } => invocation
                .arg("p")
                .arg(conn.to_string())
                .arg(&*row.instance)
                .arg(&*row.user)
                .arg(encode_optional(row.name.as_deref()))
                .arg(row.opened),
            ConnWrite::Remove { conn, user, instance, unless_alive_within } => invocation
                .arg("r")
                .arg(conn.to_string())
                .arg(instance)
                .arg(user.as_str())
                .arg("")
                .arg(unless_alive_within.map_or_else(String::new, |ms| ms.to_string())),
        };
    }
    for claim in writes.keys {
        let entry = claim.entry.map_or_else(String::new, |entry| entry.to_string());
        invocation.arg(claim.user.as_str()).arg(claim.key.as_str()).arg(entry);
    }
}

/// What `commit.lua` answered for a send of a batch.
#[derive(Debug)]
pub(super) enum Reply {
    /// In the store of this epoch: one answer per part, in order.
    Applied { epoch: String, writes: u64, now: i64, parts: Vec<Part> },
    /// Nothing applied: the store has this epoch, not the one the batch was for.
    OtherEpoch(String),
}

/// What became of one canvas's part.
#[derive(Debug)]
pub(super) enum Part {
    Placed(Placed),
    /// The head moved: the object ops since the seq the fold knew, and the connections now.
    Since {
        head: Head,
        ops: Vec<LogEntry>,
        conns: Vec<ConnRow>,
    },
    /// The head moved, and the ops since are not all kept: the canvas is to be read whole.
    Whole,
    /// The head is as expected, but nothing was applied: these claimed keys are taken (user, key, the seq
    /// holding it), or a survivor's expiry would remove these connections, whose instance is alive.
    Refused {
        taken: Vec<(UserId, IdempotencyKey, u64)>,
        spared: Vec<ConnId>,
    },
}

/// `{ 'ok', epoch, writes, now, part... }` with one part per canvas of `canvases`, or `{ 'epoch', epoch }`.
pub(super) fn parse(reply: &Value, canvases: &[CanvasId]) -> Option<Reply> {
    let items = array(reply)?;
    match items {
        [tag, epoch] if text(tag)? == "epoch" => Some(Reply::OtherEpoch(string(epoch)?)),
        [tag, epoch, writes, now, parts @ ..] if text(tag)? == "ok" && parts.len() == canvases.len() => {
            let parts = parts.iter().zip(canvases).map(|(part, canvas)| parse_part(part, canvas));
            Some(Reply::Applied {
                epoch: string(epoch)?,
                writes: uint(writes)?,
                now: int(now)?,
                parts: parts.collect::<Option<_>>()?,
            })
        }
        _ => None,
    }
}

fn parse_part(part: &Value, canvas: &CanvasId) -> Option<Part> {
    let [tag, rest @ ..] = array(part)? else { return None };
    match (text(tag)?, rest) {
        ("p", [fields @ .., first]) => {
            let head = head(&Value::Array(fields.to_vec()))?;
            let first_seq = uint(first)?;
            let ids = (first_seq..=head.seq).map(|seq| seq as i64).collect();
            Some(Part::Placed(Placed { head, first_seq, ids }))
        }
        ("s", [fields @ .., ops, conns]) => {
            let head = head(&Value::Array(fields.to_vec()))?;
            let conns = conn_rows(conns, &Value::Nil)?;
            Some(Part::Since { head, ops: log_entries(canvas, ops), conns })
        }
        ("w", []) => Some(Part::Whole),
        ("k", [count, rest @ ..]) => {
            let (taken, spared) = rest.split_at_checked(3 * usize::try_from(uint(count)?).ok()?)?;
            let taken = taken
                .chunks_exact(3)
                .map(|key| {
                    let user = UserId::parse(text(&key[0])?).ok()?;
                    let claimed = IdempotencyKey::parse(text(&key[1])?).ok()?;
                    Some((user, claimed, uint(&key[2])?))
                })
                .collect::<Option<Vec<_>>>()?;
            let spared = spared.iter().map(|conn| text(conn)?.parse().ok()).collect::<Option<Vec<_>>>()?;
            Some(Part::Refused { taken, spared })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::entry::bulk;

    fn canvas(name: &str) -> CanvasId {
        CanvasId::parse(name).unwrap()
    }

    fn ints(values: &[i64]) -> Vec<Value> {
        values.iter().map(|v| Value::Int(*v)).collect()
    }

    #[test]
    fn a_reply_reads_as_one_answer_per_part() {
        let placed = [vec![bulk("p")], ints(&[3, 12, 5, 11, 40, 2, 1, 1, 10])].concat();
        let op = Value::Array(vec![
            bulk("4-13"),
            Value::Array(
                ["ts", "9", "s", "13", "t", "object-create", "f", "u", "d", "{\"id\":\"a\"}"].map(bulk).to_vec(),
            ),
        ]);
        let conn = uuid::Uuid::new_v4().to_string();
        let conns = Value::Array(vec![bulk(&conn), bulk("i2\nbob\n3\n")]);
        let since = [vec![bulk("s")], ints(&[3, 13, 6, 13, 50, 3, 1, 1]), vec![Value::Array(vec![op]), conns]].concat();
        let spared = uuid::Uuid::new_v4();
        let taken =
            vec![bulk("k"), Value::Int(1), bulk("ann"), bulk("key 1"), Value::Int(7), bulk(&spared.to_string())];
        let parts = [placed, since, vec![bulk("w")], taken].map(Value::Array);
        let reply =
            Value::Array([vec![bulk("ok"), bulk("store"), Value::Int(9), Value::Int(1700)], parts.to_vec()].concat());
        let canvases = ["a", "b", "c", "d"].map(canvas);
        let Some(Reply::Applied { epoch, writes, now, parts }) = parse(&reply, &canvases) else { panic!() };
        assert_eq!((epoch.as_str(), writes, now), ("store", 9, 1700));
        let Part::Placed(placed) = &parts[0] else { panic!("{:?}", parts[0]) };
        assert_eq!((placed.head.generation, placed.head.seq, placed.head.rev, placed.first_seq), (3, 12, 5, 10));
        assert_eq!(placed.ids, [10, 11, 12], "the entries' seqs");
        let Part::Since { head, ops, conns } = &parts[1] else { panic!("{:?}", parts[1]) };
        assert_eq!((head.seq, ops.len(), ops[0].seq, ops[0].canvas.as_str()), (13, 1, 13, "b"));
        assert_eq!((conns.len(), &*conns[0].row.user, conns[0].row.opened), (1, "bob", 3));
        assert!(matches!(parts[2], Part::Whole));
        let Part::Refused { taken, spared: kept } = &parts[3] else { panic!("{:?}", parts[3]) };
        assert_eq!((taken[0].0.as_str(), taken[0].1.as_str(), taken[0].2), ("ann", "key 1", 7));
        assert_eq!(kept, &[spared], "the connections a survivor's expiry spared");
        assert!(parse(&reply, &canvases[..3]).is_none(), "a reply for another number of parts is refused");
    }

    #[test]
    fn a_part_is_encoded_in_the_order_commit_lua_reads_it() {
        use crate::store::records::Conn;
        use crate::store::records::{KeyClaim, NewEntry};
        let canvas = canvas("c1");
        let head = Head { bytes: 40, objects: 2, connections: 1, users: 1, ..Head::default() };
        let data = serde_json::value::RawValue::from_string(r#"{"id":"a"}"#.to_owned()).unwrap();
        let conn = uuid::Uuid::nil();
        let entry = |kind, changes_objects, reference| NewEntry {
            kind,
            from: "ann",
            data: &data,
            conn: Some(conn),
            reference,
            changes_objects,
            restore: false,
        };
        let row = Conn { user: "ann".into(), name: Some("Ann".into()), instance: "i1".into(), opened: 3 };
        let conns = [
            ConnWrite::Put { conn, row },
            ConnWrite::Remove {
                conn,
                user: UserId::parse("bob").unwrap(),
                instance: "i2".into(),
                unless_alive_within: Some(9000),
            },
        ];
        let keys = [KeyClaim {
            user: UserId::parse("ann").unwrap(),
            key: IdempotencyKey::parse("k").unwrap(),
            entry: Some(1),
        }];
        let writes = Writes {
            canvas: &canvas,
            expect: Expect::Rev(4),
            known: (2, 9),
            head: &head,
            entries: vec![entry("object-create", true, None), entry("note", false, Some("r1"))],
            conns: &conns,
            keys: &keys,
            forget_after: None,
        };
        let mut args = Args::default();
        encode(&mut args, &writes);
        let args: Vec<String> = args.0.into_iter().map(|arg| String::from_utf8(arg).unwrap()).collect();
        let nil = conn.to_string();
        let expected = [
            vec!["c1", "4", "2", "9", "40", "2", "1", "1", "", "2", "2", "1"],
            vec!["object-create", "ann", r#"{"id":"a"}"#, &nil, "", "1"],
            vec!["note", "ann", r#"{"id":"a"}"#, &nil, "=r1", "0"],
            vec!["p", &nil, "i1", "ann", "=Ann", "3", "r", &nil, "i2", "bob", "", "9000"],
            vec!["ann", "k", "1"],
        ]
        .concat();
        assert_eq!(args, expected);
        let append = Writes { expect: Expect::Append, forget_after: Some(5), conns: &[], keys: &[], ..writes };
        let mut args = Args::default();
        encode(&mut args, &append);
        assert_eq!(
            (args.0[1].as_slice(), args.0[8].as_slice()),
            (&b""[..], &b"5"[..]),
            "no rev to check; forget after"
        );
    }

    #[test]
    fn a_replayed_part_of_texts_reads_like_the_first_and_a_check_has_no_entries() {
        let replayed = ["ok", "store", "9", "1700"].map(bulk).to_vec();
        let part = Value::Array(["p", "3", "12", "5", "11", "40", "2", "1", "1", "13"].map(bulk).to_vec());
        let reply = Value::Array([replayed, vec![part]].concat());
        let Some(Reply::Applied { parts, .. }) = parse(&reply, &[canvas("a")]) else { panic!() };
        let Part::Placed(placed) = &parts[0] else { panic!() };
        assert!(placed.ids.is_empty(), "first seq past the head: a check that wrote nothing");
        let other = parse(&Value::Array(vec![bulk("epoch"), bulk("new")]), &[canvas("a")]);
        assert!(matches!(other, Some(Reply::OtherEpoch(epoch)) if epoch == "new"));
        assert!(parse(&Value::Nil, &[]).is_none());
    }
}
