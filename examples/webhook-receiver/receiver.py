#!/usr/bin/env python3
"""An example receiver of canvas-relay webhooks, standard library only.

It checks each request's signature, applies each batch exactly once (the batch and its Idempotency-Key are
committed in one SQLite transaction) and keeps, per canvas, the objects folded from the object ops, the other
logged messages as events, and the last applied epoch and seq. `GET /objects/{canvas}` shows a canvas's state in
the shape the relay's `GET /api/v1/canvases/{canvas}` uses, so the two can be compared.

It does not own the relay's side of delivery (batching, retries, leases): see PROTOCOL.md, "Server-side
consumers". Run `receiver.py --help` for the flags; README.md next to it shows it running beside the relay.
"""

import argparse
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("receiver")

# A batch holds at most --webhook-batch messages; this only stops a runaway body from filling memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
OBJECT_OPS = ("object-create", "object-update", "object-delete")

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, canvas TEXT NOT NULL, epoch TEXT NOT NULL,
    received_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS canvases (canvas TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (canvas TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (canvas, id));
CREATE TABLE IF NOT EXISTS events (canvas TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, sender TEXT, data TEXT, ts INTEGER);
CREATE TABLE IF NOT EXISTS gaps (canvas TEXT NOT NULL, epoch TEXT NOT NULL, after_seq INTEGER,
    next_seq INTEGER, received_at INTEGER NOT NULL, resynced INTEGER NOT NULL);
"""


def now_ms():
    """Unix time in milliseconds, as the relay writes `ts`."""
    return int(time.time() * 1000)


def signature_ok(secret, body, header):
    """Whether `header` is `sha256=<hex HMAC-SHA256 of body keyed with secret>`, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len("sha256="):].strip().lower())


def parse_batch(body):
    """The batch in `body`, checked for the fields this receiver relies on; ValueError says what is wrong."""
    batch = json.loads(body)
    if not isinstance(batch, dict):
        raise ValueError("the body is not a JSON object")
    if not isinstance(batch.get("canvas"), str) or not batch["canvas"]:
        raise ValueError("canvas must be a non-empty string")
    if not isinstance(batch.get("epoch"), str):
        raise ValueError("epoch must be a string")
    messages = batch.get("messages")
    if not isinstance(messages, list):
        raise ValueError("messages must be a list")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ValueError("every message needs a string type")
        if not isinstance(message.get("seq"), int) or isinstance(message["seq"], bool):
            raise ValueError("every message needs an integer seq")
    gap = batch.get("gap")
    if gap is not None and not isinstance(gap, dict):
        raise ValueError("gap must be an object")
    return batch


def fetch_canvas(relay, api_key, canvas, timeout=10):
    """The relay's current state of `canvas` (`GET /api/v1/canvases/{canvas}`): {"seq","epoch","objects"}."""
    # Canvas ids are [A-Za-z0-9._:-], all of them safe in a path segment as they are.
    url = f"{relay.rstrip('/')}/api/v1/canvases/{urllib.parse.quote(canvas, safe=':')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        state = json.load(response)
    if not isinstance(state.get("objects"), dict) or not isinstance(state.get("seq"), int):
        raise ValueError(f"{url} answered without objects and seq")
    return state


class Store:
    """The receiver's SQLite file. One connection, used under a lock: every write is a short transaction."""

    def __init__(self, path):
        self.lock = threading.Lock()
        # isolation_level=None: transactions are exactly the BEGIN/COMMIT written below.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A 200 tells the relay never to send this batch again, so the commit before it must reach the disk.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def seen(self, key):
        """Whether the batch with this Idempotency-Key has been applied already."""
        with self.lock:
            return self.db.execute("SELECT 1 FROM deliveries WHERE key = ?", (key,)).fetchone() is not None

    def apply(self, key, batch, snapshot=None):
        """Applies `batch` and records `key` in one transaction; False (and nothing done) for a repeat key.

        `snapshot` is the relay's state of the canvas, fetched because of the batch's gap; it replaces the
        canvas's objects before the batch's messages are applied.
        """
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self.db.execute("SELECT 1 FROM deliveries WHERE key = ?", (key,)).fetchone():
                    self.db.execute("ROLLBACK")
                    return False
                apply_batch(self.db, batch, snapshot)
                self.record_delivery(key, batch)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return True

    def record_delivery(self, key, batch):
        """Remembers `key`, inside the transaction that applied its batch."""
        self.db.execute("INSERT INTO deliveries VALUES (?, ?, ?, ?)",
                        (key, batch["canvas"], batch["epoch"], now_ms()))

    def state(self, canvas):
        """The canvas as `GET /objects/{canvas}` shows it; an unknown canvas has no epoch and no objects."""
        with self.lock:
            row = self.db.execute("SELECT epoch, seq FROM canvases WHERE canvas = ?", (canvas,)).fetchone()
            rows = self.db.execute("SELECT id, data FROM objects WHERE canvas = ? ORDER BY id", (canvas,))
            objects = {object_id: json.loads(data) for object_id, data in rows}
        epoch, seq = row if row else (None, 0)
        return {"canvas": canvas, "epoch": epoch, "seq": seq, "objects": objects}


def apply_batch(db, batch, snapshot):
    """Folds one batch into the canvas, inside the caller's transaction."""
    canvas, epoch = batch["canvas"], batch["epoch"]
    row = db.execute("SELECT epoch, seq FROM canvases WHERE canvas = ?", (canvas,)).fetchone()
    last_epoch, last_seq = row if row else (epoch, 0)
    if batch.get("reset"):
        log.info("canvas %s reset: new epoch %s, its objects dropped", canvas, epoch)
        db.execute("DELETE FROM objects WHERE canvas = ?", (canvas,))
        last_epoch, last_seq = epoch, 0
    elif last_epoch != epoch:
        # The relay announces every reset with a reset batch; an epoch changing without one is kept visible.
        log.warning("canvas %s moved from epoch %s to %s without a reset batch", canvas, last_epoch, epoch)
        last_epoch, last_seq = epoch, 0
    if batch.get("gap") is not None:
        record_gap(db, batch, snapshot is not None)
    if snapshot is not None:
        replace_objects(db, canvas, snapshot)
        last_epoch, last_seq = snapshot.get("epoch", epoch), snapshot["seq"]
    for message in batch["messages"]:
        # Filtered types leave holes in seq, so only a seq at or below the last applied one is suspect: it was
        # already applied (it is in the snapshot), or it belongs to another epoch.
        if last_epoch != epoch or message["seq"] <= last_seq:
            log.warning("canvas %s: seq %s of epoch %s skipped (last applied: seq %s of epoch %s)",
                        canvas, message["seq"], epoch, last_seq, last_epoch)
            continue
        apply_message(db, canvas, epoch, message)
        last_seq = message["seq"]
    db.execute("INSERT INTO canvases VALUES (?, ?, ?) ON CONFLICT (canvas) DO UPDATE "
               "SET epoch = excluded.epoch, seq = excluded.seq", (canvas, last_epoch, last_seq))


def apply_message(db, canvas, epoch, message):
    """One logged message: an object op changes `objects`, anything else is kept in `events`."""
    data = message.get("data")
    object_id = data.get("id") if isinstance(data, dict) else None
    if message["type"] not in OBJECT_OPS or not isinstance(object_id, str):
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (canvas, epoch, message["seq"], message["type"], message.get("from"),
                    json.dumps(data), message.get("ts")))
        return
    if message["type"] == "object-delete":
        db.execute("DELETE FROM objects WHERE canvas = ? AND id = ?", (canvas, object_id))
        return
    if message["type"] == "object-update":
        row = db.execute("SELECT data FROM objects WHERE canvas = ? AND id = ?", (canvas, object_id)).fetchone()
        # An update of an object this receiver never saw (it started late) keeps what the update says.
        data = {**json.loads(row[0]), **data} if row else data
    db.execute("INSERT INTO objects VALUES (?, ?, ?, ?) ON CONFLICT (canvas, id) DO UPDATE "
               "SET data = excluded.data, seq = excluded.seq",
               (canvas, object_id, json.dumps(data), message["seq"]))


def record_gap(db, batch, resynced):
    """Keeps the gap (messages that expired before delivery) so an app can see which canvases to re-read."""
    gap = batch["gap"]
    db.execute("INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?)",
               (batch["canvas"], batch["epoch"], gap.get("after"), gap.get("next"), now_ms(), int(resynced)))


def replace_objects(db, canvas, snapshot):
    """Makes the canvas's objects those of the relay's `snapshot`."""
    db.execute("DELETE FROM objects WHERE canvas = ?", (canvas,))
    db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?)",
                   [(canvas, object_id, json.dumps(data), snapshot["seq"])
                    for object_id, data in snapshot["objects"].items()])


class Handler(BaseHTTPRequestHandler):
    """One request. The server carries `store`, `secret` and `relay` (None, or (url, api key))."""

    protocol_version = "HTTP/1.1"  # keep-alive: the relay sends a canvas's batches one after another

    def do_POST(self):
        """A webhook batch: checked, then applied once, then answered 200 after its commit."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self.send_json(411, {"error": "Content-Length required"}, close=True)
        if int(length) > MAX_BODY_BYTES:
            return self.send_json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"}, close=True)
        body = self.rfile.read(int(length))
        if not signature_ok(self.server.secret, body, self.headers.get("X-Relay-Signature")):
            return self.send_json(401, {"error": "missing or wrong X-Relay-Signature"})
        try:
            batch = parse_batch(body)
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            return self.send_json(400, {"error": f"bad batch: {error}"})
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self.send_json(400, {"error": "Idempotency-Key required"})
        self.deliver(key, batch)

    def deliver(self, key, batch):
        """Applies a checked batch, first re-reading the canvas from the relay when it has a gap."""
        if self.server.store.seen(key):
            return self.send_json(200, {"ok": True, "duplicate": True})
        snapshot = None
        if batch.get("gap") is not None:
            try:
                snapshot = self.resync(batch)
            except Exception as error:  # anything urllib or the JSON can raise: the relay will retry
                log.error("re-reading canvas %s from the relay failed: %s", batch["canvas"], error)
                return self.send_json(502, {"error": f"re-reading the canvas from the relay failed: {error}"})
        try:
            applied = self.server.store.apply(key, batch, snapshot)
        except sqlite3.Error as error:
            log.error("batch %s not applied: %s", key, error)
            return self.send_json(500, {"error": f"not applied: {error}"})
        self.send_json(200, {"ok": True} if applied else {"ok": True, "duplicate": True})

    def resync(self, batch):
        """Logs the gap and, when the receiver knows the relay's API, returns the canvas's state from it."""
        canvas, gap = batch["canvas"], batch["gap"]
        log.warning("canvas %s: seqs after %s and before %s expired before delivery; re-read "
                    "GET /api/v1/canvases/%s from the relay", canvas, gap.get("after"), gap.get("next"), canvas)
        if self.server.relay is None:
            return None
        url, api_key = self.server.relay
        return fetch_canvas(url, api_key, canvas)

    def do_GET(self):
        """`/health`, and `/objects/{canvas}`: the state this receiver has folded."""
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            return self.send_json(200, {"status": "ok"})
        if path.startswith("/objects/") and len(path) > len("/objects/"):
            canvas = urllib.parse.unquote(path[len("/objects/"):])
            return self.send_json(200, self.server.store.state(canvas))
        self.send_json(404, {"error": "GET /health or /objects/{canvas}; POST the webhook to any path"})

    def send_json(self, status, value, close=False):
        """Answers `value` as JSON; `close` ends the connection (its body was not read)."""
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        """Request lines go to the debug log instead of stderr."""
        log.debug("%s %s", self.address_string(), format % args)


def parse_args(argv):
    """The command line; the secret and API key may come from the relay's own environment variables."""
    parser = argparse.ArgumentParser(description="Example canvas-relay webhook receiver (stdlib only).")
    parser.add_argument("--listen", default="127.0.0.1:9900", help="HOST:PORT; port 0 picks one")
    parser.add_argument("--secret", default=os.environ.get("RELAY_WEBHOOK_SECRET"),
                        help="the relay's --webhook-secret (env RELAY_WEBHOOK_SECRET)")
    parser.add_argument("--db", default="./receiver.db", help="this receiver's SQLite file")
    parser.add_argument("--relay", help="the relay's base URL, to re-read a canvas after a gap")
    parser.add_argument("--api-key", default=os.environ.get("RELAY_API_KEY"),
                        help="the relay's --api-key, for --relay (env RELAY_API_KEY)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret (or RELAY_WEBHOOK_SECRET) is required: the relay's --webhook-secret")
    if args.relay and not args.api_key:
        parser.error("--relay needs --api-key (or RELAY_API_KEY): the relay's API answers 403 without one")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        parser.error(f"--listen {args.listen!r}: expected HOST:PORT")
    args.address = (host or "127.0.0.1", int(port))
    return args


def make_server(args):
    """The bound server, ready for serve_forever()."""
    server = ThreadingHTTPServer(args.address, Handler)
    server.daemon_threads = True
    server.store = Store(args.db)
    server.secret = args.secret
    server.relay = (args.relay, args.api_key) if args.relay else None
    return server


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    server = make_server(args)
    host, port = server.server_address[:2]
    print(f"webhook receiver listening on {host}:{port} (database {args.db})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
