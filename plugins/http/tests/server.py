#!/usr/bin/env python3
"""Test HTTP server for the http and sentry output plugins (standard library only).

Listens on 127.0.0.1 on a free port and writes the port to --port-file. Every
request is recorded in --dir as NNNN.json (method, path, headers, what was
answered) and NNNN.body (the raw body bytes).

What to answer is read per request from --control: a file of JSON lines,
the first line taken (and removed) by each request; an empty or missing file
means 200. A line is an object with any of
  {"status": 429, "headers": {"Retry-After": "7"}, "body": "text", "body_size": N}
  {"action": "hang", "seconds": 20}   read the request, then answer nothing for that long
  {"action": "close"}                 read the request, then close without an answer

Sentry: a POST to .../api/<project>/envelope/ is parsed as an envelope; the
result goes to NNNN.envelope.json. With --expect DIR (the driver's --out
directory, holding records.json) each attachment is compared with the dump
of the record named by the event's extra.record_id. A malformed envelope or an
attachment that differs is answered 400 with the reason, whatever --control
says, so the plugin reports it and the test fails.

The server exits on SIGTERM or after --lifetime seconds, whichever comes first.
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time

MAX_BODY = 256 * 1024 * 1024


def parse_envelope(data):
    """Sentry envelope -> {"header": {...}, "items": [{"header": {...}, "payload": bytes}]}.

    Strict: JSON header lines, every item with a length and exactly that many
    bytes followed by a newline (or the end)."""
    def line_at(pos):
        end = data.find(b"\n", pos)
        if end < 0:
            raise ValueError("header line at byte %d has no newline" % pos)
        return data[pos:end], end + 1

    raw, pos = line_at(0)
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("envelope header is not an object")
    items = []
    while pos < len(data):
        raw, pos = line_at(pos)
        if not raw:
            raise ValueError("empty item header at byte %d" % pos)
        ih = json.loads(raw)
        if not isinstance(ih, dict) or "type" not in ih:
            raise ValueError("item header without a type: %r" % raw[:80])
        if "length" not in ih or not isinstance(ih["length"], int):
            raise ValueError("item %s has no length" % ih.get("type"))
        n = ih["length"]
        if pos + n > len(data):
            raise ValueError("item %s claims %d bytes, %d left" % (ih["type"], n, len(data) - pos))
        payload = data[pos:pos + n]
        pos += n
        if pos < len(data):
            if data[pos:pos + 1] != b"\n":
                raise ValueError("item %s is not followed by a newline" % ih["type"])
            pos += 1
        items.append({"header": ih, "payload": payload})
    return {"header": header, "items": items}


def check_envelope(data, expect_dir):
    """Parse and verify an envelope; returns (summary dict, error or None)."""
    env = parse_envelope(data)
    out = {"header": env["header"], "items": []}
    hdr = env["header"]
    for k in ("event_id", "dsn", "sent_at"):
        if k not in hdr:
            return out, "envelope header lacks %s" % k
    if not re.fullmatch(r"[0-9a-f]{32}", hdr["event_id"]):
        return out, "event_id is not 32 hex digits"
    records = {}
    if expect_dir:
        with open(os.path.join(expect_dir, "records.json")) as f:
            records = {r["id"]: r for r in json.load(f)}
    event = None
    for it in env["items"]:
        ih = it["header"]
        entry = {"header": ih}
        if ih["type"] == "event":
            event = json.loads(it["payload"])
            entry["event"] = event
            if event.get("event_id") != hdr["event_id"]:
                return out, "the event's event_id differs from the envelope's"
        elif ih["type"] == "attachment":
            entry["len"] = len(it["payload"])
            entry["sha256"] = hashlib.sha256(it["payload"]).hexdigest()
            if event is None:
                return out, "attachment before the event"
            rid = event.get("extra", {}).get("record_id")
            if expect_dir:
                rec = records.get(rid)
                if rec is None or not rec.get("body"):
                    return out, "attachment for a record without a dump: %r" % rid
                with open(rec["body"], "rb") as f:
                    want = f.read()
                entry["matches_dump"] = want == it["payload"]
                if want != it["payload"]:
                    return out, "attachment of %s differs from the dump (%d vs %d bytes)" % (
                        rid, len(it["payload"]), len(want))
        out["items"].append(entry)
    if event is None:
        return out, "envelope has no event item"
    return out, None


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.count = 0
        self.stop = threading.Event()

    def next_control(self):
        path = self.args.control
        with self.lock:
            self.count += 1
            n = self.count
            ctl = {}
            if path and os.path.exists(path):
                with open(path) as f:
                    lines = [l for l in f.read().splitlines() if l.strip()]
                if lines:
                    ctl = json.loads(lines[0])
                    tmp = path + ".tmp"
                    with open(tmp, "w") as f:
                        f.write("".join(l + "\n" for l in lines[1:]))
                    os.replace(tmp, path)
        return n, ctl


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cg-test-server/1"

    def log_message(self, fmt, *a):
        sys.stderr.write("server: %s\n" % (fmt % a))

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        st = self.server.state
        n, ctl = st.next_control()
        base = os.path.join(st.args.dir, "%04d" % n)
        length = self.headers.get("Content-Length")
        body = b""
        if self.headers.get("Transfer-Encoding"):
            ctl = {"status": 411, "body": "send a Content-Length"}
        elif length is not None:
            ln = int(length)
            if ln > MAX_BODY:
                ctl = {"status": 413, "body": "too large for the test server"}
                self.close_connection = True
            else:
                body = self.rfile.read(ln)
        with open(base + ".body", "wb") as f:
            f.write(body)
        rec = {
            "n": n,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "control": ctl,
        }
        m = re.search(r"/api/([^/]+)/envelope/$", self.path.split("?")[0])
        if m and self.command == "POST":
            try:
                summary, err = check_envelope(body, st.args.expect)
            except Exception as e:  # a malformed envelope is a failed test, not a crash
                summary, err = {}, "malformed envelope: %s" % e
            summary["project"] = m.group(1)
            summary["error"] = err
            with open(base + ".envelope.json", "w") as f:
                json.dump(summary, f, indent=1, default=repr)
            if err:
                ctl = {"status": 400, "body": err}
                rec["control"] = ctl
        with open(base + ".json.tmp", "w") as f:
            json.dump(rec, f, indent=1)
        os.replace(base + ".json.tmp", base + ".json")

        action = ctl.get("action")
        if action == "hang":
            deadline = time.monotonic() + float(ctl.get("seconds", 20))
            while time.monotonic() < deadline and not st.stop.is_set():
                time.sleep(0.05)
            self.close_connection = True
            return
        if action == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status = int(ctl.get("status", 200))
        if "body_size" in ctl:
            payload = (b"0123456789abcdef" * (int(ctl["body_size"]) // 16 + 1))[:int(ctl["body_size"])]
        else:
            payload = ctl.get("body", "ok" if status < 300 else "").encode()
        self.send_response(status)
        for k, v in ctl.get("headers", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client stopped reading: that is allowed


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--control")
    ap.add_argument("--expect")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require a client certificate signed by this CA")
    ap.add_argument("--lifetime", type=float, default=280)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    srv = Server(("127.0.0.1", 0), Handler)
    srv.state = State(args)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.load_verify_locations(args.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, args.port_file)

    def stop(*_):
        srv.state.stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    limit = threading.Timer(args.lifetime, lambda: os._exit(0))
    limit.daemon = True
    limit.start()
    sys.stderr.write("server: listening on 127.0.0.1:%d\n" % port)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.state.stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
