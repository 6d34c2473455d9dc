#!/usr/bin/env python3
"""Verify a compute-ledger export bundle using only docs/FORMAT.md (no project code).

    python3 verify_bundle.py BUNDLE [--key NAME+KEYID+BASE64]

Needs the PyPI packages `blake3` and `cryptography`. Exit code 0 and "ok ..." when every
check of FORMAT.md section 7 holds; 1 and "FAILED at seq N: why" (or "FAILED: why") if not.
It checks the hash chain, the envelope fields against the event JSON, the Merkle root or
proofs, and the Ed25519 signature; it does not re-derive the event bodies' JSON.
"""
import base64, hashlib, json, sys
import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CONTEXT = "compute-ledger 2026-11 event v1"
TYPES = ["lease_granted", "capacity_changed", "milestone_reached", "invoice_issued", "payment_received",
         "sla_credit_issued", "contract_terminated", "period_closed", "event_reversed"]

class Failed(Exception):
    def __init__(self, why, seq=None):
        super().__init__(why)
        self.seq = seq

def H(*parts): return blake3.blake3(b"".join(parts)).digest()
def leaf(h): return H(b"\x00", h)
def node(l, r): return H(b"\x01", l, r)
def b64(text):
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text: raise Failed("non-canonical base64")
    return raw
def unhex(text):
    if len(text) != 64 or text != text.lower(): raise Failed("a hash is not 64 lowercase hex digits")
    return bytes.fromhex(text)

def varint(buf, i):  # unsigned LEB128, minimal
    n = shift = 0
    while True:
        b = buf[i]; i += 1
        n |= (b & 0x7F) << shift; shift += 7
        if not b & 0x80:
            if b == 0 and shift > 7: raise Failed("overlong varint")
            return n, i

def string(buf, i):
    n, i = varint(buf, i)
    return buf[i:i + n].decode("utf-8"), i + n

def envelope(buf):  # FORMAT.md section 4, up to the body's type
    prev, i = buf[:32], 32
    seq, i = varint(buf, i)
    fmt, i = varint(buf, i)
    if fmt != 1: raise Failed("unknown envelope format %d" % fmt)
    tag, i = buf[i], i + 1
    contract = None
    if tag == 1: contract, i = string(buf, i)
    elif tag != 0: raise Failed("bad option tag")
    version, i = varint(buf, i)
    year, i = varint(buf, i)
    date = "%04d-%02d-%02d" % (year, buf[i], buf[i + 1]); i += 2
    _recorded_at, i = varint(buf, i)
    actor, i = string(buf, i)
    tag, i = buf[i], i + 1
    key = None
    if tag == 1: key, i = string(buf, i)
    elif tag != 0: raise Failed("bad option tag")
    kind, i = varint(buf, i)
    return dict(prev=prev, seq=seq, contract_id=contract, version=version, effective_date=date,
                actor=actor, idempotency_key=key, type=TYPES[kind])

def mth(leaves):
    if not leaves: return H(b"")
    if len(leaves) == 1: return leaf(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node(mth(leaves[:k]), mth(leaves[k:]))

def verify_inclusion(h, index, size, proof, root):  # RFC 9162 2.1.3.2
    if index >= size: raise Failed("leaf index not below tree size")
    fn, sn, r = index, size - 1, leaf(h)
    for p in proof:
        if sn == 0: raise Failed("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0: fn >>= 1; sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1; sn >>= 1
    if sn != 0 or r != root: raise Failed("inclusion proof fails")

def verify_consistency(first, second, first_root, second_root, proof):  # RFC 9162 2.1.4.2
    if first == 0 and not proof and first_root == H(b""): return
    if first == second and not proof and first_root == second_root: return
    if not proof or first >= second: raise Failed("consistency proof fails")
    if first & (first - 1) == 0: proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1: fn >>= 1; sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0: raise Failed("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0: fn >>= 1; sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1; sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root: raise Failed("consistency proof fails")

def parse_vkey(text):
    name, keyid, key = text.split("+", 2)
    raw = base64.b64decode(key, validate=True)
    if raw[:1] != b"\x01" or len(raw) != 33: raise Failed("not an Ed25519 verifier key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() != keyid: raise Failed("key id mismatch")
    return name, raw[1:]

def verify_note(note, name, public):
    text, _, sigs = note.partition("\n\n")
    text += "\n"
    keyid = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    good = False
    for line in sigs.rstrip("\n").split("\n"):
        if not line.startswith("\u2014 "): raise Failed("malformed signature line")
        who, blob = line[2:].split(" ", 1)
        blob = b64(blob)
        if who == name and blob[:4] == keyid:
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text.encode())
            except Exception:
                raise Failed("the checkpoint's signature does not verify")
            good = True
    if not good: raise Failed("checkpoint not signed by the key")
    origin, size, root = text[:-1].split("\n")
    if origin != name or str(int(size)) != size: raise Failed("malformed checkpoint")
    return int(size), b64(root)

def verify(path, trusted_key=None):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    if not data.endswith("\n"): raise Failed("no final newline")
    lines = data[:-1].split("\n")
    header = json.loads(lines[0])
    if sorted(header) != ["format", "from", "origin", "to", "verifier_key", "version"]: raise Failed("bad header")
    if header["format"] != "compute-ledger-export" or header["version"] != 1: raise Failed("not a version 1 bundle")
    if trusted_key and trusted_key != header["verifier_key"]: raise Failed("the bundle names another key")
    name, public = parse_vkey(trusted_key or header["verifier_key"])
    if header["origin"] != name: raise Failed("origin is not the key's name")
    first, last = header["from"], header["to"]
    if len(lines) != last - first + 3: raise Failed("expected %d event lines" % (last - first + 1))
    hashes, prev = [], b"\x00" * 32 if first == 1 else None
    for seq, line in zip(range(first, last + 1), lines[1:-1]):
        try:
            e = json.loads(line)
            if sorted(e) != ["canonical", "event", "hash", "prev_hash", "seq"] or e["seq"] != seq: raise Failed("not event %d" % seq)
            raw = b64(e["canonical"])
            h = blake3.blake3(raw, derive_key_context=CONTEXT).digest()
            env = envelope(raw)
            if unhex(e["hash"]) != h: raise Failed("the bytes hash differently")
            if env["seq"] != seq or unhex(e["prev_hash"]) != env["prev"]: raise Failed("seq or prev_hash differ from the bytes")
            if prev is not None and env["prev"] != prev: raise Failed("prev_hash does not link")
            for k in ("contract_id", "type", "effective_date", "actor", "idempotency_key"):
                if e["event"].get(k) != env[k]: raise Failed("event JSON %s differs from the bytes" % k)
        except Failed as f:
            raise Failed(str(f), seq)
        except (ValueError, KeyError, IndexError, TypeError) as x:
            raise Failed("malformed: %s" % x, seq)
        hashes.append(h); prev = h
    end = json.loads(lines[-1])
    size, root = verify_note(end["checkpoint"], name, public)
    if size < last: raise Failed("checkpoint does not cover the bundle")
    if first == 1 and last == size:
        if "proofs" in end or mth(hashes) != root: raise Failed("Merkle root differs from the checkpoint")
    else:
        proofs = end["proofs"]
        inc, con = proofs.get("inclusion"), proofs.get("consistency")
        if hashes:
            if inc["seq"] != last or inc["tree_size"] != size: raise Failed("wrong inclusion proof")
            verify_inclusion(hashes[-1], last - 1, size, [unhex(x) for x in inc["hashes"]], root)
        if first > 1:
            if con["from"] != first - 1 or con["to"] != size: raise Failed("wrong consistency proof")
            verify_consistency(first - 1, size, unhex(con["from_root"]), root, [unhex(x) for x in con["hashes"]])
    return first, last, size

if __name__ == "__main__":
    args = sys.argv[1:]
    key = args[args.index("--key") + 1] if "--key" in args else None
    try:
        a, b, n = verify(args[0], key)
        print("ok: events %d to %d verified; checkpoint size %d" % (a, b, n))
    except Failed as f:
        print("FAILED" + (" at seq %d" % f.seq if f.seq else "") + ": " + str(f)); sys.exit(1)
    except Exception as x:  # anything malformed is a failure, never a pass
        print("FAILED: %s" % x); sys.exit(1)
