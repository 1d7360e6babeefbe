#!/usr/bin/env python3
"""Checks what server.py recorded against what the driver sent (its --out dir).

  check.py header REQ NAME                 print a request header's value ("" if absent)
  check.py http REQ OUT --body cbor|multipart [--zstd] --gateway G --upstream U --region R --batch-id N
  check.py sentry DIR OUT --key KEY --path PATH [--first N] [--count N]

REQ is a recorded request without extension (DIR/0001). Exit 1 with the
reason on the first mismatch. Standard library only: CBOR is decoded here,
zstd by the `zstd` command (exit 77 when it is missing).
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

SKIP = 77


def fail(msg):
    print("check: FAIL: %s" % msg, file=sys.stderr)
    sys.exit(1)


# ---- CBOR (RFC 8949), enough for the batch document ----

class _Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("CBOR truncated at byte %d" % self.p)
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def arg(self, info):
        if info < 24:
            return info
        if info in (24, 25, 26, 27):
            n = 1 << (info - 24)
            return int.from_bytes(self.take(n), "big")
        if info == 31:
            return None  # indefinite
        raise ValueError("bad additional info %d" % info)

    def item(self, depth=0):
        if depth > 64:
            raise ValueError("CBOR nested too deep")
        ib = self.take(1)[0]
        mt, info = ib >> 5, ib & 31
        if mt == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info in (22, 23):
                return None
            if info == 25:
                h = int.from_bytes(self.take(2), "big")
                return struct.unpack(">e", h.to_bytes(2, "big"))[0]
            if info == 26:
                return struct.unpack(">f", self.take(4))[0]
            if info == 27:
                return struct.unpack(">d", self.take(8))[0]
            if info == 31:
                raise ValueError("unexpected break")
            if info < 24:
                return ("simple", info)
            return ("simple", self.take(1)[0])
        n = self.arg(info)
        if mt == 0:
            return n
        if mt == 1:
            return -1 - n
        if mt in (2, 3):
            if n is None:
                parts = []
                while self.d[self.p] != 0xFF:
                    parts.append(self.item(depth + 1))
                self.p += 1
                v = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
            else:
                v = self.take(n)
            return v if mt == 2 else v.decode("utf-8")
        if mt == 4:
            out = []
            while (n is None and self.d[self.p] != 0xFF) or (n is not None and len(out) < n):
                out.append(self.item(depth + 1))
            if n is None:
                self.p += 1
            return out
        if mt == 5:
            out = {}
            while (n is None and self.d[self.p] != 0xFF) or (n is not None and len(out) < n):
                k = self.item(depth + 1)
                if k in out:
                    raise ValueError("duplicate map key %r" % (k,))
                out[k] = self.item(depth + 1)
            if n is None:
                self.p += 1
            return out
        if mt == 6:
            return self.item(depth + 1)  # tags: the value is what we compare
        raise ValueError("bad major type")


def cbor_loads(data):
    r = _Reader(data)
    v = r.item()
    if r.p != len(data):
        raise ValueError("%d bytes after the CBOR item" % (len(data) - r.p))
    return v


# ---- helpers ----

def load_req(req):
    with open(req + ".json") as f:
        meta = json.load(f)
    with open(req + ".body", "rb") as f:
        body = f.read()
    return meta, body


def header(meta, name):
    vals = [v for k, v in meta["headers"] if k.lower() == name.lower()]
    return vals[-1] if vals else None


def load_records(out):
    with open(os.path.join(out, "records.json")) as f:
        recs = json.load(f)
    for r in recs:
        r["bytes"] = None
        if r["body"]:
            with open(r["body"], "rb") as f:
                r["bytes"] = f.read()
    return recs


def unzstd(data):
    if not shutil.which("zstd"):
        print("check: the zstd command is not installed", file=sys.stderr)
        sys.exit(SKIP)
    p = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, timeout=60)
    if p.returncode != 0:
        fail("zstd -d failed: %s" % p.stderr.decode(errors="replace"))
    return p.stdout


def parse_multipart(ctype, body):
    """multipart/form-data -> [(headers dict lower-cased, content bytes)]."""
    params = dict(p.strip().split("=", 1) for p in ctype.split(";")[1:] if "=" in p)
    b = params.get("boundary", "").strip('"')
    if not b:
        fail("multipart without a boundary: %r" % ctype)
    delim = b"--" + b.encode()
    if not body.startswith(delim + b"\r\n"):
        fail("multipart body does not start with the boundary")
    if not body.endswith(b"\r\n" + delim + b"--\r\n"):
        fail("multipart body does not end with the closing boundary")
    inner = body[len(delim) + 2:-(len(delim) + 6)]
    parts = []
    for raw in inner.split(b"\r\n" + delim + b"\r\n"):
        head, sep, content = raw.partition(b"\r\n\r\n")
        if not sep:
            fail("multipart part without a blank line after its headers")
        hdrs = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.decode().partition(":")
            hdrs[k.strip().lower()] = v.strip()
        parts.append((hdrs, content))
    return parts


def disposition(h):
    out = {}
    for p in h.get("content-disposition", "").split(";")[1:]:
        k, _, v = p.strip().partition("=")
        out[k] = v.strip('"')
    return out


# ---- commands ----

def cmd_header(a):
    meta, _ = load_req(a.req)
    print(header(meta, a.name) or "")


def cmd_http(a):
    meta, body = load_req(a.req)
    recs = load_records(a.out)
    if meta["method"] != "POST":
        fail("method %s" % meta["method"])
    if int(header(meta, "Content-Length") or -1) != len(body):
        fail("Content-Length %s but %d bytes" % (header(meta, "Content-Length"), len(body)))
    if header(meta, "X-Crashgate-Batch") != str(a.batch_id):
        fail("X-Crashgate-Batch %r" % header(meta, "X-Crashgate-Batch"))
    want_key = "%s/%s/%d" % (a.gateway, a.upstream, a.batch_id)
    if header(meta, "Idempotency-Key") != want_key:
        fail("Idempotency-Key %r, expected %r" % (header(meta, "Idempotency-Key"), want_key))
    enc = header(meta, "Content-Encoding")
    if a.zstd:
        if enc != "zstd":
            fail("Content-Encoding %r, expected zstd" % enc)
        if body[:4] != b"\x28\xb5\x2f\xfd":
            fail("body is not a zstd frame")
        body = unzstd(body)
    elif enc:
        fail("unexpected Content-Encoding %r" % enc)
    ctype = header(meta, "Content-Type") or ""

    if a.body == "cbor":
        if ctype != "application/cbor":
            fail("Content-Type %r" % ctype)
        try:
            doc = cbor_loads(body)
        except ValueError as e:
            fail("body is not CBOR: %s" % e)
        if not isinstance(doc, dict):
            fail("document is not a map")
        if set(doc) != {"gateway", "upstream", "region", "batch_id", "records"}:
            fail("document keys %s" % sorted(doc))
        if (doc["gateway"], doc["upstream"], doc["region"], doc["batch_id"]) != (
                a.gateway, a.upstream, a.region, a.batch_id):
            fail("document header %r" % ({k: doc[k] for k in doc if k != "records"},))
        got = doc["records"]
        if len(got) != len(recs):
            fail("%d records, expected %d" % (len(got), len(recs)))
        for i, (g, r) in enumerate(zip(got, recs)):
            if g.get("meta") != r["meta"]:
                fail("record %d meta differs:\n got  %r\n want %r" % (i, g.get("meta"), r["meta"]))
            if r["bytes"] is None:
                if "dump" in g:
                    fail("record %d (throttled) carries a dump" % i)
            elif g.get("dump") != r["bytes"]:
                fail("record %d dump differs (%d vs %d bytes)" % (i, len(g.get("dump") or b""), len(r["bytes"])))
            if set(g) - {"meta", "dump"}:
                fail("record %d has keys %s" % (i, sorted(g)))
        print("check: cbor ok: %d records, %d dump bytes" % (len(got), sum(len(r["bytes"] or b"") for r in recs)))
        return

    if not ctype.startswith("multipart/form-data;"):
        fail("Content-Type %r" % ctype)
    parts = parse_multipart(ctype, body)
    h0, c0 = parts[0]
    if disposition(h0).get("name") != "meta" or h0.get("content-type") != "application/json":
        fail("first part is not meta: %r" % h0)
    metas = json.loads(c0)
    if metas != [r["meta"] for r in recs]:
        fail("meta part differs from the records' meta")
    files = parts[1:]
    with_body = [(i, r) for i, r in enumerate(recs) if r["bytes"] is not None]
    if len(files) != len(with_body):
        fail("%d file parts, expected %d" % (len(files), len(with_body)))
    for (h, c), (i, r) in zip(files, with_body):
        d = disposition(h)
        if d.get("name") != str(i) or not d.get("filename"):
            fail("file part for record %d has disposition %r" % (i, h.get("content-disposition")))
        if c != r["bytes"]:
            fail("file part %d differs from the dump (%d vs %d bytes)" % (i, len(c), len(r["bytes"])))
    print("check: multipart ok: meta of %d records, %d file parts" % (len(metas), len(files)))


def cmd_sentry(a):
    recs = load_records(a.out)
    names = sorted(f[:-5] for f in os.listdir(a.dir) if f.endswith(".json") and f[:4].isdigit()
                   and not f.endswith(".envelope.json"))
    names = names[a.first:]
    count = a.count if a.count is not None else len(recs)
    if len(names) != count:
        fail("%d requests, expected %d" % (len(names), count))
    for name, r in zip(names, recs):
        req = os.path.join(a.dir, name)
        meta, _ = load_req(req)
        if meta["path"] != a.path:
            fail("%s: path %s, expected %s" % (name, meta["path"], a.path))
        auth = header(meta, "X-Sentry-Auth") or ""
        for part in ("Sentry ", "sentry_version=7", "sentry_client=crashgate/0.1", "sentry_key=%s" % a.key):
            if part not in auth:
                fail("%s: X-Sentry-Auth %r lacks %r" % (name, auth, part))
        if header(meta, "Content-Type") != "application/x-sentry-envelope":
            fail("%s: Content-Type %r" % (name, header(meta, "Content-Type")))
        with open(req + ".envelope.json") as f:
            env = json.load(f)
        if env.get("error"):
            fail("%s: %s" % (name, env["error"]))
        want_id = hashlib.sha256(r["id"].encode()).hexdigest()[:32]
        if env["header"]["event_id"] != want_id:
            fail("%s: event_id %s, expected sha256(%s)[:16] = %s" % (name, env["header"]["event_id"], r["id"], want_id))
        if "@" not in env["header"]["dsn"] or a.key not in env["header"]["dsn"]:
            fail("%s: envelope dsn %r" % (name, env["header"]["dsn"]))
        items = env["items"]
        if items[0]["header"] != {"type": "event", "length": items[0]["header"].get("length")}:
            fail("%s: event item header %r" % (name, items[0]["header"]))
        ev = items[0]["event"]
        m = r["meta"]
        crash = m.get("crash", {})
        for k, v in (("platform", "native"), ("level", "fatal")):
            if ev.get(k) != v:
                fail("%s: event %s %r" % (name, k, ev.get(k)))
        tags = ev.get("tags", {})
        want_tags = {"device": m["device"], "region": m["region"], "signature": m["signature"],
                     "reason": crash.get("reason"), "build_id": m.get("build_id")}
        if m.get("group"):
            want_tags["group"] = m["group"]
        for k, v in want_tags.items():
            if tags.get(k) != v:
                fail("%s: tag %s = %r, expected %r" % (name, k, tags.get(k), v))
        if ev.get("fingerprint") != [m["signature"]]:
            fail("%s: fingerprint %r" % (name, ev.get("fingerprint")))
        exc = ev.get("exception", {}).get("values", [{}])[0]
        if exc.get("type") != crash.get("reason"):
            fail("%s: exception type %r" % (name, exc.get("type")))
        if ev.get("extra", {}).get("record_id") != r["id"]:
            fail("%s: extra.record_id %r" % (name, ev.get("extra", {}).get("record_id")))
        if ev.get("extra", {}).get("occurrences") != r["occurrences"]:
            fail("%s: extra.occurrences %r, expected %r" % (name, ev.get("extra", {}).get("occurrences"),
                                                           r["occurrences"]))
        atts = [it for it in items[1:] if it["header"]["type"] == "attachment"]
        if r["bytes"] is None:
            if atts:
                fail("%s: throttled record with an attachment" % name)
            continue
        if len(atts) != 1:
            fail("%s: %d attachments" % (name, len(atts)))
        ah = atts[0]["header"]
        want_type = "event.minidump" if r["format"] == "minidump" else "event.attachment"
        if ah.get("attachment_type") != want_type:
            fail("%s: attachment_type %r for %s" % (name, ah.get("attachment_type"), r["format"]))
        if not ah.get("filename"):
            fail("%s: attachment without a filename" % name)
        if atts[0].get("matches_dump") is not True or atts[0]["sha256"] != hashlib.sha256(r["bytes"]).hexdigest():
            fail("%s: attachment bytes differ from the dump" % name)
    print("check: sentry ok: %d envelopes" % len(names))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("header")
    p.add_argument("req")
    p.add_argument("name")
    p = sub.add_parser("http")
    p.add_argument("req")
    p.add_argument("out")
    p.add_argument("--body", choices=["cbor", "multipart"], default="cbor")
    p.add_argument("--zstd", action="store_true")
    p.add_argument("--gateway", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--batch-id", type=int, required=True)
    p = sub.add_parser("sentry")
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--key", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--first", type=int, default=0, help="skip this many recorded requests")
    p.add_argument("--count", type=int, help="requests expected (default: one per record)")
    a = ap.parse_args()
    {"header": cmd_header, "http": cmd_http, "sentry": cmd_sentry}[a.cmd](a)


if __name__ == "__main__":
    main()
