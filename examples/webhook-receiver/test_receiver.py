"""Tests of the example webhook receiver: a real receiver process on port 0, spoken to as the relay would.

Run: python3 -m unittest discover -s examples/webhook-receiver
"""

import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import receiver  # noqa: E402 (the module under test, next to this file)

SECRET = "s3cret"
API_KEY = "k3y"


def batch(canvas, epoch, *messages, **extra):
    """A webhook body as the relay writes it; `messages` are (seq, type, data) triples."""
    body = {"canvas": canvas, "epoch": epoch,
            "messages": [{"seq": seq, "type": kind, "from": "u1", "data": data, "ts": 1763860000000 + seq}
                         for seq, kind, data in messages]}
    body.update(extra)
    return body


def key_of(body):
    """The Idempotency-Key the relay gives `body`: <canvas>:<epoch>:<first seq>-<last seq>."""
    seqs = [message["seq"] for message in body["messages"]] or [0]
    return f"{body['canvas']}:{body['epoch']}:{seqs[0]}-{seqs[-1]}"


class Receiver:
    """A receiver process on a free port, with its own database in `directory`."""

    def __init__(self, directory, *flags):
        self.db = os.path.join(directory, "receiver.db")
        self.log = open(os.path.join(directory, "receiver.log"), "w+")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "receiver.py"), "--listen", "127.0.0.1:0", "--secret", SECRET,
             "--db", self.db, *flags],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={**os.environ, "RELAY_API_KEY": ""})
        line = self.process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.stop()
            raise AssertionError(f"no 'listening on' line: {line!r}; log: {self.logged()}")
        self.url = f"http://{match.group(1)}"

    def post(self, body, key=None, secret=SECRET, raw=None, path="/webhook"):
        """POSTs `body` signed with `secret` (None: unsigned); returns (status, JSON answer)."""
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key or key_of(body)}
        if secret is not None:
            headers["X-Relay-Signature"] = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
        return request(urllib.request.Request(self.url + path, data=data, headers=headers, method="POST"))

    def state(self, canvas):
        status, answer = request(urllib.request.Request(f"{self.url}/objects/{canvas}"))
        assert status == 200, (status, answer)
        return answer

    def rows(self, sql, *params):
        with sqlite3.connect(self.db) as db:
            return db.execute(sql, params).fetchall()

    def logged(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()
        self.log.close()


def request(req):
    """(status, JSON body) of a request, for error statuses too."""
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


class ReceiverTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.receiver = Receiver(self.directory.name)

    def tearDown(self):
        self.receiver.stop()
        self.directory.cleanup()

    def deliver(self, body, **kwargs):
        status, answer = self.receiver.post(body, **kwargs)
        self.assertEqual((status, answer), (200, {"ok": True}), self.receiver.logged())

    def test_object_ops_are_folded_in_order(self):
        self.deliver(batch("c1", "E1", (1, "object-create", {"id": "a", "kind": "rect", "x": 1}),
                           (2, "object-create", {"id": "b", "kind": "dot"}),
                           (3, "object-update", {"id": "a", "x": 5, "y": 2})))
        self.deliver(batch("c1", "E1", (4, "object-delete", {"id": "b"}),
                           (5, "comment", {"text": "hi"})))
        self.assertEqual(self.receiver.state("c1"), {
            "canvas": "c1", "epoch": "E1", "seq": 5,
            "objects": {"a": {"id": "a", "kind": "rect", "x": 5, "y": 2}}})
        self.assertEqual(self.receiver.rows("SELECT seq, type, sender, data FROM events"),
                         [(5, "comment", "u1", '{"text": "hi"}')])

    def test_a_repeated_key_is_acknowledged_and_not_applied(self):
        first = batch("c1", "E1", (1, "object-create", {"id": "a", "x": 1}), (2, "comment", {"n": 1}))
        self.deliver(first)
        # Same key, a body that would change the state: the key alone decides.
        changed = batch("c1", "E1", (1, "object-create", {"id": "a", "x": 99}), (2, "comment", {"n": 2}))
        for body in (first, changed):
            self.assertEqual(self.receiver.post(body), (200, {"ok": True, "duplicate": True}))
        self.assertEqual(self.receiver.state("c1")["objects"], {"a": {"id": "a", "x": 1}})
        self.assertEqual(self.receiver.rows("SELECT count(*) FROM events"), [(1,)])
        self.assertEqual(self.receiver.rows("SELECT key FROM deliveries"), [("c1:E1:1-2",)])

    def test_bad_signatures_and_bodies_are_refused_and_change_nothing(self):
        body = batch("c1", "E1", (1, "object-create", {"id": "a"}))
        for secret in ("wrong", None):
            status, answer = self.receiver.post(body, secret=secret)
            self.assertEqual(status, 401)
            self.assertIn("X-Relay-Signature", answer["error"])
        status, answer = self.receiver.post(None, key="c1:E1:1-1", raw=b'{"canvas": "c1", ')
        self.assertEqual(status, 400)
        self.assertIn("error", answer)
        status, _ = self.receiver.post(None, key="c1:E1:1-1", raw=b'{"canvas": "c1", "epoch": "E1"}')
        self.assertEqual(status, 400)
        self.assertEqual(self.receiver.state("c1"), {"canvas": "c1", "epoch": None, "seq": 0, "objects": {}})
        self.assertEqual(self.receiver.rows("SELECT count(*) FROM deliveries"), [(0,)])
        self.deliver(body)  # the same batch, correctly signed, is then applied
        self.assertEqual(self.receiver.state("c1")["objects"], {"a": {"id": "a"}})

    def test_a_reset_drops_the_canvas_and_starts_its_new_epoch(self):
        self.deliver(batch("c1", "E1", (1, "object-create", {"id": "a"}), (2, "object-create", {"id": "b"})))
        self.deliver(batch("c2", "F1", (1, "object-create", {"id": "other"})))
        reset = batch("c1", "E2", reset=True)
        self.assertEqual(key_of(reset), "c1:E2:0-0")
        self.deliver(reset)
        self.assertEqual(self.receiver.state("c1"), {"canvas": "c1", "epoch": "E2", "seq": 0, "objects": {}})
        self.deliver(batch("c1", "E2", (1, "object-create", {"id": "new"})))
        self.assertEqual(self.receiver.state("c1"), {
            "canvas": "c1", "epoch": "E2", "seq": 1, "objects": {"new": {"id": "new"}}})
        self.assertEqual(self.receiver.state("c2")["objects"], {"other": {"id": "other"}})

    def test_filtered_seqs_are_no_gap_and_a_stale_batch_is_skipped(self):
        # --webhook-types object-* left out seqs 2, 4 and 6-7: the holes are not gaps.
        self.deliver(batch("c1", "E1", (1, "object-create", {"id": "a", "x": 1}),
                           (3, "object-update", {"id": "a", "x": 3}),
                           (5, "object-update", {"id": "a", "x": 5})))
        self.deliver(batch("c1", "E1", (8, "object-update", {"id": "a", "x": 8, "z": True})))
        # Seqs already applied, under a key never seen: applying them again would undo seq 8.
        self.deliver(batch("c1", "E1", (3, "object-update", {"id": "a", "x": 3}),
                           (5, "object-delete", {"id": "a"})), key="c1:E1:3-5:again")
        self.assertEqual(self.receiver.state("c1"), {
            "canvas": "c1", "epoch": "E1", "seq": 8, "objects": {"a": {"id": "a", "x": 8, "z": True}}})
        self.assertIn("skipped", self.receiver.logged())

    def test_a_gap_without_the_relay_is_recorded_and_logged(self):
        self.deliver(batch("c1", "E1", (1, "object-create", {"id": "a"})))
        self.deliver(batch("c1", "E1", (9, "object-create", {"id": "b"}), gap={"after": 1, "next": 9}))
        self.assertEqual(self.receiver.rows("SELECT canvas, epoch, after_seq, next_seq, resynced FROM gaps"),
                         [("c1", "E1", 1, 9, 0)])
        self.assertEqual(sorted(self.receiver.state("c1")["objects"]), ["a", "b"])
        self.assertIn("re-read GET /api/v1/canvases/c1", self.receiver.logged())


class FakeRelay(BaseHTTPRequestHandler):
    """`GET /api/v1/canvases/c1` as the relay answers it, for the API key only."""

    state = {"seq": 12, "epoch": "E1", "presence": [],
             "objects": {"b": {"id": "b", "from": "relay"}, "c": {"id": "c"}}}
    requests = 0  # how many times the receiver re-read a canvas

    def do_GET(self):
        FakeRelay.requests += 1
        authorized = self.headers.get("Authorization") == f"Bearer {API_KEY}"
        status, value = (200, self.state) if authorized and self.path == "/api/v1/canvases/c1" else (403, {})
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ResyncTest(unittest.TestCase):
    def setUp(self):
        FakeRelay.requests = 0
        self.relay = ThreadingHTTPServer(("127.0.0.1", 0), FakeRelay)
        threading.Thread(target=self.relay.serve_forever, daemon=True).start()
        self.directory = tempfile.TemporaryDirectory()
        relay_url = f"http://127.0.0.1:{self.relay.server_address[1]}"
        self.receiver = Receiver(self.directory.name, "--relay", relay_url, "--api-key", API_KEY)

    def tearDown(self):
        self.receiver.stop()
        self.relay.shutdown()
        self.relay.server_close()
        self.directory.cleanup()

    def test_a_gap_replaces_the_objects_with_the_relays_state(self):
        post = self.receiver.post
        self.assertEqual(post(batch("c1", "E1", (1, "object-create", {"id": "a"}))), (200, {"ok": True}))
        # Seq 12 is in the relay's state already; only 13 is applied on top of it.
        gap = batch("c1", "E1", (12, "object-create", {"id": "b", "from": "batch"}),
                    (13, "object-update", {"id": "c", "x": 1}), gap={"after": 1, "next": 12})
        self.assertEqual(post(gap), (200, {"ok": True}), self.receiver.logged())
        self.assertEqual(self.receiver.state("c1"), {
            "canvas": "c1", "epoch": "E1", "seq": 13,
            "objects": {"b": {"id": "b", "from": "relay"}, "c": {"id": "c", "x": 1}}})
        self.assertEqual(self.receiver.rows("SELECT resynced FROM gaps"), [(1,)])
        # The relay's retry of that batch: acknowledged from the key alone, without re-reading the canvas.
        self.assertEqual(post(gap), (200, {"ok": True, "duplicate": True}))
        self.assertEqual(FakeRelay.requests, 1)

    def test_a_failed_reread_is_not_acknowledged(self):
        gap = batch("c9", "E1", gap={"after": 1, "next": 5})  # the fake relay answers 403 for c9
        status, answer = self.receiver.post(gap, key="c9:E1:2-4")
        self.assertEqual(status, 502, answer)
        self.assertEqual(self.receiver.rows("SELECT count(*) FROM deliveries"), [(0,)])


def crash_before_recording(key, batch):
    """Stands in for Store.record_delivery: the process dies after the batch was applied, before its key."""
    raise RuntimeError("crash")


class AtomicityTest(unittest.TestCase):
    def test_a_failure_before_the_key_is_recorded_applies_nothing(self):
        with tempfile.TemporaryDirectory() as directory:
            store = receiver.Store(os.path.join(directory, "receiver.db"))
            body = batch("c1", "E1", (1, "object-create", {"id": "a", "n": 1}),
                         (2, "object-update", {"id": "a", "n": 2}))
            record = store.record_delivery
            store.record_delivery = crash_before_recording
            with self.assertRaises(RuntimeError):
                store.apply("c1:E1:1-2", body)
            self.assertEqual(store.state("c1"), {"canvas": "c1", "epoch": None, "seq": 0, "objects": {}})
            store.record_delivery = record
            self.assertTrue(store.apply("c1:E1:1-2", body))  # the relay's retry
            self.assertFalse(store.apply("c1:E1:1-2", body))
            self.assertEqual(store.state("c1")["objects"], {"a": {"id": "a", "n": 2}})

    def test_signature_is_checked_over_the_raw_bytes(self):
        body = b'{"canvas":"c1"}'
        good = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
        self.assertTrue(receiver.signature_ok("k", body, good))
        self.assertFalse(receiver.signature_ok("k", body + b" ", good))
        self.assertFalse(receiver.signature_ok("k", body, good[len("sha256="):]))
        self.assertFalse(receiver.signature_ok("other", body, good))


if __name__ == "__main__":
    unittest.main()
