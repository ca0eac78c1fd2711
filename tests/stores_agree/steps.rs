//! The steps of a `stores_agree` run, written from its seed alone before anything is sent, so that a seed
//! replays its run exactly: object ops, plain messages, idempotency keys sent again, tabs opened and closed,
//! and checkpoints. Data is written as a client might write it (see [`value`]), never by a JSON serializer,
//! which would put members in name order and rewrite numbers.

/// Small, so that a padded object is sometimes refused with `canvas_full` (the relay's least is 1024).
pub const MAX_STATE: usize = 2048;
/// Random steps per run, and a checkpoint after every `CHECK_EVERY` of them.
const STEPS: usize = 300;
const CHECK_EVERY: usize = 60;
/// Object ids `o0`..: few, so that an op often finds its object there, and sometimes not.
const IDS: usize = 6;
/// Top-level field names of objects; never `ts` (the test takes every `"ts":` for a commit time).
const FIELDS: [&str; 8] = ["x", "y", "w", "label", "style", "tags", "a", "z"];
/// Member names of nested objects.
const MEMBERS: [&str; 3] = ["q", "b", "a"];
/// Scalars as a client may write them, `|` between them: numbers in forms a parse-and-write would change,
/// strings with whitespace and escapes.
const SCALARS: &str = concat!(
    "1.0|1e2|-0.0|0|-17|3.25|1E-7|12345678901234567890123|-9007199254740993|",
    r#"true|false|null|"hi"|"a  b"|"é✓ \n\"q\""|"\u00e9""#
);
/// Users who open tabs, each with the names a tab of theirs may give.
const USERS: [(&str, [&str; 2]); 4] =
    [("ann", ["Ann", "Annie"]), ("bob", ["Bob", "Bobby"]), ("cat", ["Cat", "Kat"]), ("dan", ["Dan", "Daniel"])];
/// Most tabs open at once (besides the watcher).
const MAX_TABS: usize = 6;

/// splitmix64: a seeded generator, the same on every machine, with no crate to pin.
struct Rng(u64);

impl Rng {
    /// A number from 0 to `n - 1`.
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// Any one of `items`.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `n` distinct items of `items`, in random order.
    fn distinct<T: Copy>(&mut self, items: &[T], n: usize) -> Vec<T> {
        let mut items = items.to_vec();
        for i in 0..n {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        items.truncate(n);
        items
    }
}

/// One step, sent to both relays alike.
#[derive(Debug, Clone)]
pub enum Step {
    /// `POST /api/v1/canvases/{c}/messages` with this body, and this `Idempotency-Key` if any.
    Publish { body: String, key: Option<String> },
    /// A logged message the watcher sends on its WebSocket: the whole frame, and its `ref`.
    Send { frame: String, reference: String },
    /// Tab `tab` of `user` opens, with `name` if any.
    Open { tab: usize, user: &'static str, name: Option<&'static str> },
    /// Tab `tab` closes; `last` when no other tab of its user is open (so `user-disconnected` is logged).
    Close { tab: usize, last: bool },
    /// `GET` the canvas and its messages.
    Read,
}

impl Step {
    /// The step as a failure shows it, with a long `pad` shortened.
    pub fn described(&self) -> String {
        let text = format!("{self:?}");
        let Some(from) = text.find("pppppppp") else { return text };
        let to = text[from..].find(|c| c != 'p').map_or(text.len(), |length| from + length);
        format!("{}p…({} bytes){}", &text[..from], to - from, &text[to..])
    }
}

/// Writes the steps of a run from its seed, before anything is sent: they depend on the seed alone.
struct Script {
    /// Every choice comes from it, in the order the steps are written.
    rng: Rng,
    /// The steps so far.
    steps: Vec<Step>,
    /// Open tabs: (tab number, user).
    open: Vec<(usize, &'static str)>,
    /// Tabs opened so far (numbers them).
    tabs: usize,
    /// Steps that carried an idempotency key, to send again.
    keyed: Vec<Step>,
    /// Refs and keys used so far (numbers them).
    refs: usize,
}

/// Every step of the run of `seed`.
pub fn script(seed: u64) -> Vec<Step> {
    let mut script =
        Script { rng: Rng(seed), steps: Vec::new(), open: Vec::new(), tabs: 0, keyed: Vec::new(), refs: 0 };
    // Issue 27's case first: a named tab, a nameless one of the same user, the nameless one closed.
    script.open_as("ann", Some("Ann"));
    script.open_as("ann", None);
    script.close(1);
    script.checkpoint();
    for index in 1..=STEPS {
        script.random_step();
        if index % CHECK_EVERY == 0 {
            script.checkpoint();
        }
    }
    while !script.open.is_empty() {
        let at = script.rng.below(script.open.len());
        script.close(at);
    }
    script.checkpoint();
    script.steps
}

impl Script {
    /// One step of the random part: a tab opened or closed, a keyed step sent again, a plain message, or an
    /// object op (some padded, to reach `--max-canvas-state`).
    fn random_step(&mut self) {
        match self.rng.below(100) {
            0..=9 if self.open.len() < MAX_TABS => self.open_tab(),
            0..=15 if !self.open.is_empty() => {
                let at = self.rng.below(self.open.len());
                self.close(at);
            }
            16..=25 if !self.keyed.is_empty() => {
                let again = self.keyed[self.rng.below(self.keyed.len())].clone();
                self.steps.push(again);
            }
            26..=33 => {
                let ws = self.whitespace();
                let (kind, data) = (self.rng.pick(&["note", "chat"]), value(&mut self.rng, 2, ws));
                self.publish(kind, data);
            }
            34..=39 => self.object_op(true),
            _ => self.object_op(false),
        }
    }

    /// What goes after each `,` and `:` of a step's data: mostly nothing, sometimes whitespace to remove.
    fn whitespace(&mut self) -> &'static str {
        self.rng.pick(&["", "", "", " ", "\n\t "])
    }

    /// A create, update or delete of a random object; `padded`: a create or update with a big `pad` field.
    fn object_op(&mut self, padded: bool) {
        let ws = self.whitespace();
        let (kind, fields) = match self.rng.below(if padded { 2 } else { 10 }) {
            0 | 2..=4 => ("object-create", 1 + self.rng.below(4)),
            1 | 5..=7 => ("object-update", 1 + self.rng.below(3)),
            _ => ("object-delete", 0),
        };
        let mut members: Vec<String> = Vec::new();
        for name in self.rng.distinct(&FIELDS, fields) {
            let null = kind == "object-update" && self.rng.chance(20);
            let value = if null { "null".to_owned() } else { value(&mut self.rng, 2, ws) };
            members.push(format!(r#""{name}":{ws}{value}"#));
        }
        if padded {
            members.push(format!(r#""pad":"{}""#, "p".repeat(200 + self.rng.below(1400))));
        }
        let id = format!(r#""id":{ws}"o{}""#, self.rng.below(IDS));
        members.insert(self.rng.below(members.len() + 1), id);
        self.publish(kind, format!("{{{}}}", members.join(&format!(",{ws}"))));
    }

    /// A logged message through the API or the watcher's socket, with an idempotency key a third of the time.
    fn publish(&mut self, kind: &str, data: String) {
        let key = self.rng.chance(33).then(|| self.next_ref("k"));
        let step = if self.rng.chance(50) {
            Step::Publish { body: format!(r#"{{"type":"{kind}","data":{data}}}"#), key: key.clone() }
        } else {
            let reference = self.next_ref("r");
            let keyed = key.as_ref().map_or(String::new(), |key| format!(r#","idempotency_key":"{key}""#));
            Step::Send { frame: format!(r#"{{"type":"{kind}","data":{data},"ref":"{reference}"{keyed}}}"#), reference }
        };
        if key.is_some() {
            self.keyed.push(step.clone());
        }
        self.steps.push(step);
    }

    fn next_ref(&mut self, prefix: &str) -> String {
        self.refs += 1;
        format!("{prefix}{}", self.refs)
    }

    fn open_tab(&mut self) {
        let (user, names) = self.rng.pick(&USERS);
        let name = [None, Some(names[0]), Some(names[1])][self.rng.below(3)];
        self.open_as(user, name);
    }

    fn open_as(&mut self, user: &'static str, name: Option<&'static str>) {
        self.tabs += 1;
        self.open.push((self.tabs, user));
        self.steps.push(Step::Open { tab: self.tabs, user, name });
    }

    fn close(&mut self, at: usize) {
        let (tab, user) = self.open.remove(at);
        let last = self.open.iter().all(|(_, other)| *other != user);
        self.steps.push(Step::Close { tab, last });
    }

    /// The canvas and its log read, a fresh joiner's welcome (it then leaves), and an object that never fits.
    fn checkpoint(&mut self) {
        self.steps.push(Step::Read);
        self.open_as("probe", Some("Probe"));
        self.close(self.open.len() - 1);
        self.publish("object-create", format!(r#"{{"id":"big","pad":"{}"}}"#, "p".repeat(MAX_STATE)));
    }
}

/// A JSON value as a client may write it: a scalar of [`SCALARS`], or an array or object (members not in name
/// order) nested up to `depth`, with `ws` after each `,` and `:`.
fn value(rng: &mut Rng, depth: usize, ws: &str) -> String {
    match rng.below(if depth == 0 { 2 } else { 4 }) {
        0 | 1 => rng.pick(&SCALARS.split('|').collect::<Vec<_>>()).to_owned(),
        2 => {
            let items: Vec<String> = (0..rng.below(3)).map(|_| value(rng, depth - 1, ws)).collect();
            format!("[{}]", items.join(&format!(",{ws}")))
        }
        _ => {
            let count = rng.below(MEMBERS.len() + 1);
            let names = rng.distinct(&MEMBERS, count);
            let members: Vec<String> =
                names.into_iter().map(|name| format!(r#""{name}":{ws}{}"#, value(rng, depth - 1, ws))).collect();
            format!("{{{}}}", members.join(&format!(",{ws}")))
        }
    }
}
