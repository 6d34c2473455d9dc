#!/usr/bin/env python3
"""Verify compute-ledger export bundles and evidence packs using only docs/FORMAT.md.

    python3 verify_bundle.py FILE... --key NAME+KEYID+BASE64
                             [--witness VKEY ... [--witness-quorum N]]
    python3 verify_bundle.py FILE... --trust-bundle-key     (no key: trust the file's own)

Needs the PyPI packages `blake3` and `cryptography`; nothing from the project. For one file it
prints "ok: ..." and exits 0 when every check of FORMAT.md holds, else prints "FAILED at seq N:
why" (or "FAILED: why") and exits 1. With several files it prints "FILE: ok ..." or "FILE:
FAILED ..." for each and exits 1 if any failed. Exit code 2: it could not run.

A bundle (section 7): every event's canonical bytes are decoded (section 4) and rendered as
the event's JSON (section 8), which must equal the JSON the bundle shows; hashes, links and
recorded_at order; the Merkle root or the proofs; the checkpoint's signature (section 6) and,
with --witness, a quorum of witness cosignatures (section 6.1).
An evidence pack (section 10): the same per event, plus the contract, the versions 1, 2, ...
(the chain of that contract's events), each event's inclusion proof to the checkpoint, and
the report's identity (contract, as_of, known_at, currency). The report's figures are not
recomputed here (that needs the revenue rules): `cledger verify` does that.
"""
import argparse, base64, datetime, hashlib, json, re, sys, unicodedata
import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CONTEXT = "compute-ledger 2026-11 event v1"
CANONICAL_MAX = 64 * 1024
MINOR_UNITS_MAX = 10 ** 30
NOTE_MAX, SIGNATURES_MAX = 64 * 1024, 64
TYPES = ["lease_granted", "capacity_changed", "milestone_reached", "invoice_issued", "payment_received",
         "sla_credit_issued", "contract_terminated", "period_closed", "event_reversed"]
OUTCOMES = ["achieved", "failed", "waived"]
# ISO 4217 minor-unit exponents (FORMAT.md section 3): codes not listed are invalid.
EXPONENTS = {c: e for e, codes in {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD "
       "CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
       "GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA "
       "MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR "
       "RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD "
       "TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW"}.items() for c in codes.split()}


class Failed(Exception):
    def __init__(self, why, seq=None):
        super().__init__(why)
        self.seq = seq


# --- JSON, as strictly as the format's parsers read it -------------------------------------

class Obj(dict):
    duplicate = False


def _pairs(items):
    o = Obj()
    for k, v in items:
        if k in o:
            o.duplicate = True  # a typed object refuses this; inside `event` the last one counts
        o[k] = v
    return o


def _no_constant(name):
    raise Failed("not JSON: %s" % name)


def loads(text):
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except ValueError as e:
        raise Failed("not JSON: %s" % e)


def record(o, required, optional=(), what="line"):
    """A typed object: exactly these keys (optional ones may be absent or null)."""
    if not isinstance(o, dict) or o.duplicate:
        raise Failed("%s is not an object with unique keys" % what)
    keys = set(o)
    if not set(required) <= keys or not keys <= set(required) | set(optional):
        raise Failed("%s has keys %s" % (what, sorted(keys)))
    return o


def u64(v, what):
    if type(v) is not int or not 0 <= v < 2 ** 64:
        raise Failed("%s is not a non-negative integer" % what)
    return v


def string(v, what):
    if type(v) is not str:
        raise Failed("%s is not a string" % what)
    return v


def same(a, b):
    """JSON equality with types kept apart (true is not 1, 1 is not 1.0)."""
    if type(a) is not type(b) and not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def b64(text, what="base64"):
    if type(text) is not str:
        raise Failed("%s is not a string" % what)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise Failed("%s is not base64" % what)
    if base64.b64encode(raw).decode() != text:
        raise Failed("%s is not canonical base64" % what)
    return raw


def unhex(text, what="a hash"):
    if type(text) is not str or not re.fullmatch(r"[0-9a-f]{64}", text):
        raise Failed("%s is not 64 lowercase hex digits" % what)
    return bytes.fromhex(text)


# --- Canonical bytes (FORMAT.md sections 2 to 4) -------------------------------------------

class Reader:
    def __init__(self, buf):
        self.buf, self.i = buf, 0

    def raw(self, n):
        if self.i + n > len(self.buf):
            raise Failed("the bytes end inside a field")
        out = self.buf[self.i:self.i + n]
        self.i += n
        return out

    def varint(self, bits):  # unsigned LEB128, minimal, within `bits`
        n = shift = 0
        while True:
            b = self.raw(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and shift > 7:
                    raise Failed("overlong varint")
                if n >= 1 << bits:
                    raise Failed("varint out of range")
                return n
            if shift >= bits + 7:
                raise Failed("varint too long")

    def zigzag(self, bits):
        n = self.varint(bits)
        return (n >> 1) ^ -(n & 1)

    def u8(self):
        return self.raw(1)[0]

    def text(self):
        n = self.varint(64)
        try:
            return self.raw(n).decode("utf-8")
        except UnicodeDecodeError:
            raise Failed("a string is not UTF-8")

    def option(self, read):
        tag = self.u8()
        if tag > 1:
            raise Failed("an option tag is neither 0 nor 1")
        return read() if tag else None

    def date(self):
        year, month, day = self.varint(16), self.u8(), self.u8()
        try:
            return datetime.date(year, month, day).isoformat()  # years 1 to 9999, as the format
        except ValueError:
            raise Failed("not a calendar date")

    def currency(self):
        code = self.raw(3)
        try:
            code = code.decode("ascii")
        except UnicodeDecodeError:
            raise Failed("not a currency code")
        if code not in EXPONENTS:
            raise Failed("not a currency code")
        return code

    def money(self):
        code, units = self.currency(), self.zigzag(128)
        if abs(units) > MINOR_UNITS_MAX:
            raise Failed("an amount beyond 10^30 minor units")
        return code, units

    def window(self):
        return {"start": self.date(), "end": self.date()}


def decimal(money):
    code, units = money
    e = EXPONENTS[code]
    sign, units = ("-" if units < 0 else ""), abs(units)
    if e == 0:
        return sign + str(units)
    whole, fraction = divmod(units, 10 ** e)
    return "%s%d.%0*d" % (sign, whole, e, fraction)


def body(r, kind):
    """The wire `data` of body `kind` (FORMAT.md section 4, "Bodies"; JSON in section 8)."""
    if kind == 0:
        g = {"provider": r.text(), "customer": r.text(), "currency": r.currency(), "term": r.window(),
             "cluster": {"site": r.text(), "gpu_model": r.text(), "gpus": r.varint(64)}}
        g["headline"] = decimal(r.money())
        tranches = []
        for _ in range(r.varint(64)):
            t = {"id": r.text(), "amount": decimal(r.money()), "window": r.window()}
            condition = r.varint(32)
            if condition == 0:
                t["firm"] = True
            elif condition == 1:
                t["milestone"] = r.text()
            else:
                raise Failed("a tranche condition is neither 0 nor 1")
            tranches.append(t)
        g["tranches"] = tranches
        return g
    if kind == 1:
        return {"gpus_delta": r.zigzag(64), "amount_delta": decimal(r.money())}
    if kind == 2:
        milestone, outcome = r.text(), r.varint(32)
        if outcome >= len(OUTCOMES):
            raise Failed("an outcome is not 0, 1 or 2")
        return {"milestone": milestone, "outcome": OUTCOMES[outcome]}
    if kind == 3:
        return {"invoice_id": r.text(), "amount": decimal(r.money()), "due_date": r.date()}
    if kind == 4:
        p = {"payment_id": r.text(), "amount": decimal(r.money())}
        invoice = r.option(r.text)
        if invoice is not None:
            p["invoice_id"] = invoice
        return p
    if kind == 5:
        return {"amount": decimal(r.money()), "reason": r.text()}
    if kind == 6:
        return {"fee": decimal(r.money())}
    if kind == 7:
        return {"period_end": r.date()}
    if kind == 8:
        return {"target_seq": r.varint(64), "reason": r.text()}
    raise Failed("unknown body type %d" % kind)


def decode(raw):
    """Canonical bytes -> (seq, prev_hash, contract_id, version, recorded_at, wire JSON)."""
    if len(raw) > CANONICAL_MAX:
        raise Failed("an event larger than 64 KiB")
    r = Reader(raw)
    prev, seq = r.raw(32), r.varint(64)
    if r.varint(16) != 1:
        raise Failed("unknown envelope format")
    contract = r.option(r.text)
    if contract is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", contract):
        raise Failed("not a contract id")
    version, date, recorded_at, actor = r.varint(64), r.date(), r.zigzag(64), r.text()
    key = r.option(r.text)
    kind = r.varint(32)
    data = body(r, kind)
    if r.i != len(raw):
        raise Failed("bytes after the end of the event")
    if seq == 0 or version == 0 or (kind == 7) != (contract is None):
        raise Failed("the event is inconsistent (seq 0, version 0, or a contract on a ledger-wide type)")
    wire = {}
    if contract is not None:
        wire["contract_id"] = contract
    wire.update({"type": TYPES[kind], "effective_date": date, "actor": actor})
    if key is not None:
        wire["idempotency_key"] = key
    wire["data"] = data
    return seq, prev, contract, version, recorded_at, wire


def event_line(line, seq, extra=()):
    """FORMAT.md section 7, step 2: one event line, checked against its own bytes."""
    e = record(line, ["seq", "hash", "prev_hash", "canonical", "event"] + list(extra), what="an event line")
    if u64(e["seq"], "seq") != seq:
        raise Failed("the line says seq %s" % e["seq"])
    raw = b64(e["canonical"], "canonical")
    h = blake3.blake3(raw, derive_key_context=CONTEXT).digest()
    byte_seq, prev, contract, version, recorded_at, wire = decode(raw)
    if byte_seq != seq:
        raise Failed("the canonical bytes are of seq %d" % byte_seq)
    if unhex(e["hash"]) != h:
        raise Failed("the bytes hash differently")
    if unhex(e["prev_hash"]) != prev:
        raise Failed("prev_hash differs from the bytes")
    if not same(e["event"], wire):
        raise Failed("the event JSON is not what the canonical bytes say")
    return e, h, prev, contract, version, recorded_at, wire


# --- Merkle tree (section 5, RFC 9162 with BLAKE3) -----------------------------------------

def H(*parts): return blake3.blake3(b"".join(parts)).digest()
def leaf(h): return H(b"\x00", h)
def node(l, r): return H(b"\x01", l, r)
EMPTY = H(b"")


def mth(leaves):
    if not leaves:
        return EMPTY
    if len(leaves) == 1:
        return leaf(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(h, index, size, proof, root):  # RFC 9162 2.1.3.2
    if index >= size:
        raise Failed("leaf index not below the tree size")
    fn, sn, r = index, size - 1, leaf(h)
    for p in proof:
        if sn == 0:
            raise Failed("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise Failed("the inclusion proof fails")


def verify_consistency(first, second, first_root, second_root, proof):  # RFC 9162 2.1.4.2
    if first > second:
        raise Failed("consistency: the first tree is larger")
    if first == second:
        if proof or first_root != second_root:
            raise Failed("the consistency proof fails (equal sizes)")
        return
    if first == 0:
        if proof or first_root != EMPTY:
            raise Failed("the consistency proof fails (from the empty tree)")
        return
    if not proof:
        raise Failed("the consistency proof is empty")
    if first & (first - 1) == 0:
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise Failed("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise Failed("the consistency proof fails")


def hashes(v, what):
    if type(v) is not list:
        raise Failed("%s is not a list" % what)
    return [unhex(x, what) for x in v]


# --- Keys, signed notes, checkpoints, cosignatures (section 6) -----------------------------

def name_ok(name):
    return name != "" and not any(c.isspace() or c == "+" or unicodedata.category(c) == "Cc" for c in name)


def key_id(name, kind, public):
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


def parse_vkey(text, kind):
    """`name+keyid+base64(type || key)` -> (name, public key bytes, key id)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not name_ok(parts[0]):
        raise Failed("not a verifier key")
    name, keyid, raw = parts[0], parts[1], b64(parts[2], "a verifier key")
    if len(raw) != 33 or raw[0] != kind:
        raise Failed("not an Ed25519 key of signature type %#04x" % kind)
    if key_id(name, kind, raw[1:]).hex() != keyid:
        raise Failed("the key id does not match the name and key")
    return name, raw[1:], bytes.fromhex(keyid)


def ed25519_ok(public, signature, message):
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def parse_note(note):
    """A signed note -> (text, [(name, key id, signature bytes)])."""
    if type(note) is not str or len(note.encode()) > NOTE_MAX:
        raise Failed("the note is not a string of at most 64 KiB")
    if any((ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F for c in note):
        raise Failed("the note holds a control character")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise Failed("malformed note")
    text, lines = note[:split + 1], note[split + 2:-1].split("\n")
    if len(lines) > SIGNATURES_MAX:
        raise Failed("too many signatures")
    signatures = []
    for line in lines:
        if not line.startswith("\u2014 ") or " " not in line[2:]:
            raise Failed("malformed signature line")
        name, blob = line[2:].split(" ", 1)
        blob = b64(blob, "a signature")
        if not name_ok(name) or len(blob) < 4:
            raise Failed("malformed signature line")
        signatures.append((name, blob[:4], blob[4:]))
    return text, signatures


def parse_checkpoint(text):
    lines = text[:-1].split("\n") if text.endswith("\n") else []
    if len(lines) != 3 or lines[0] == "" or not re.fullmatch(r"0|[1-9][0-9]*", lines[1]) or int(lines[1]) >= 2 ** 64:
        raise Failed("malformed checkpoint")
    root = b64(lines[2], "the root")
    if len(root) != 32:
        raise Failed("the root is not 32 bytes")
    return lines[0], int(lines[1]), root


def verify_checkpoint(note, log_key, witnesses, quorum):
    """The log's signature, then (if asked) a quorum of witness cosignatures."""
    name, public, keyid = log_key
    text, signatures = parse_note(note)
    mine = [s for n, k, s in signatures if n == name and k == keyid]
    if not mine:
        raise Failed("the checkpoint is not signed by the key")
    for s in mine:
        if len(s) != 64 or not ed25519_ok(public, s, text.encode()):
            raise Failed("the checkpoint's signature does not verify")
    origin, size, root = parse_checkpoint(text)
    if origin != name:
        raise Failed("the checkpoint's origin is not the key's name")
    cosigned = []
    for w_name, w_public, w_keyid in witnesses:
        good = False
        for n, k, s in signatures:
            if n != w_name or k != w_keyid:
                continue
            if len(s) != 8 + 64:
                raise Failed("a cosignature by %s is malformed" % w_name)
            ts = int.from_bytes(s[:8], "big")
            message = ("cosignature/v1\ntime %d\n" % ts + text).encode()
            if ts >= 2 ** 63 or not ed25519_ok(w_public, s[8:], message):
                raise Failed("the cosignature by %s does not verify" % w_name)
            good = True
        if good:
            cosigned.append(w_name)
    if witnesses and len(cosigned) < quorum:
        raise Failed("%d valid cosignature(s), %d required" % (len(cosigned), quorum))
    return size, root, cosigned


def header_key(named, trusted):
    """The key a file names, which must be the trusted one (if given)."""
    key = parse_vkey(string(named, "verifier_key"), 0x01)
    if trusted is not None and key != trusted:
        raise Failed("the file names another verifier key than the one given")
    return key


# --- Export bundles (section 7) -----------------------------------------------------------

def verify_bundle(lines, trusted, witnesses, quorum):
    header = record(loads(lines[0]), ["format", "version", "origin", "verifier_key", "from", "to"], what="the header")
    if header["format"] != "compute-ledger-export" or header["version"] != 1 or type(header["version"]) is not int:
        raise Failed("not a version 1 bundle")
    key = header_key(header["verifier_key"], trusted)
    first, last = u64(header["from"], "from"), u64(header["to"], "to")
    if first == 0 or first > last + 1:
        raise Failed("the header's range is not a range")
    if string(header["origin"], "origin") != key[0]:
        raise Failed("the header's origin is not the key's name")
    hashes_seen, prev, recorded = [], (b"\x00" * 32 if first == 1 else None), None
    seq = first
    for line in lines[1:]:
        if seq > last:
            break
        try:
            _, h, linked, _, _, at, _ = event_line(loads(line), seq)
            if prev is not None and linked != prev:
                raise Failed("prev_hash does not link to the previous event")
            if recorded is not None and at < recorded:
                raise Failed("recorded_at goes back in time")
        except Failed as f:
            raise Failed(str(f), seq)
        except (ValueError, KeyError, IndexError, TypeError) as x:
            raise Failed("malformed: %s" % x, seq)
        hashes_seen.append(h)
        prev, recorded, seq = h, at, seq + 1
    if seq <= last:
        raise Failed("missing: the bundle ends before it", seq)
    if len(lines) != last - first + 3:
        raise Failed("no checkpoint line" if len(lines) < last - first + 3 else "text after the checkpoint line")
    end = record(loads(lines[-1]), ["checkpoint"], ["proofs"], what="the checkpoint line")
    size, root, cosigned = verify_checkpoint(string(end["checkpoint"], "checkpoint"), key, witnesses, quorum)
    if size < last:
        raise Failed("the checkpoint does not cover the bundle")
    proofs = end.get("proofs")
    if first == 1 and last == size:
        if proofs is not None:
            raise Failed("a whole-ledger bundle carries no proofs")
        if mth(hashes_seen) != root:
            raise Failed("the events' Merkle root is not the checkpoint's")
        return "events %d to %d verified; checkpoint size %d" % (first, last, size), cosigned
    if proofs is None:
        raise Failed("a partial bundle needs proofs")
    proofs = record(proofs, [], ["inclusion", "consistency"], what="proofs")
    inclusion, consistency = proofs.get("inclusion"), proofs.get("consistency")
    if (inclusion is None) != (not hashes_seen):
        raise Failed("an inclusion proof goes with a non-empty range")
    if inclusion is not None:
        inc = record(inclusion, ["seq", "tree_size", "hashes"], what="the inclusion proof")
        if u64(inc["seq"], "seq") != last or u64(inc["tree_size"], "tree_size") != size:
            raise Failed("the inclusion proof is not of the last event in the checkpoint's tree")
        try:
            verify_inclusion(hashes_seen[-1], last - 1, size, hashes(inc["hashes"], "a proof hash"), root)
        except Failed as f:
            raise Failed("not in the checkpoint's tree: %s" % f, last)
    if consistency is not None:
        con = record(consistency, ["from", "to", "from_root", "hashes"], what="the consistency proof")
        if u64(con["from"], "from") + 1 != first or u64(con["to"], "to") != size:
            raise Failed("the consistency proof is not from the tree before the bundle to the checkpoint's")
        from_root = unhex(con["from_root"], "from_root")
        verify_consistency(first - 1, size, from_root, root, hashes(con["hashes"], "a proof hash"))
    elif first > 1:
        raise Failed("a bundle not starting at seq 1 needs a consistency proof")
    return "events %d to %d verified; checkpoint size %d" % (first, last, size), cosigned


# --- Evidence packs (section 10) ----------------------------------------------------------

def verify_pack(lines, trusted, witnesses, quorum):
    m = record(loads(lines[0]), ["format", "version", "origin", "verifier_key", "contract_id", "as_of", "known_at",
                                 "granularity", "checkpoint", "seqs"], what="the manifest")
    if m["format"] != "compute-ledger-evidence" or m["version"] != 1 or type(m["version"]) is not int:
        raise Failed("not a version 1 evidence pack")
    key = header_key(m["verifier_key"], trusted)
    if string(m["origin"], "origin") != key[0]:
        raise Failed("the manifest's origin is not the key's name")
    contract = string(m["contract_id"], "contract_id")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", contract):
        raise Failed("the manifest's contract_id is not a contract id")
    as_of = string(m["as_of"], "as_of")
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", as_of) or datetime.date.fromisoformat(as_of).isoformat() != as_of:
            raise ValueError
    except ValueError:
        raise Failed("the manifest's as_of is not a date")
    if m["granularity"] not in ("month", "quarter"):
        raise Failed("the manifest's granularity is month or quarter")
    size, root, cosigned = verify_checkpoint(string(m["checkpoint"], "checkpoint"), key, witnesses, quorum)
    known_at = u64(m["known_at"], "known_at")
    if known_at > size:
        raise Failed("known_at is beyond the checkpoint")
    seqs = m["seqs"]
    if type(seqs) is not list or not 1 <= len(seqs) <= 1_000_000:
        raise Failed("a pack lists 1 to 1,000,000 events")
    seqs = [u64(s, "a seq") for s in seqs]
    if seqs[0] == 0 or any(a >= b for a, b in zip(seqs, seqs[1:])) or seqs[-1] > known_at:
        raise Failed("the manifest's seqs are not increasing from 1 up to known_at")
    recorded, currency = None, None
    for version, (seq, line) in enumerate(zip(seqs, lines[1:]), start=1):
        try:
            e, h, _, event_contract, event_version, at, wire = event_line(loads(line), seq, ["inclusion"])
            if event_contract != contract:
                raise Failed("the event is not of the pack's contract")
            if event_version != version:
                raise Failed("the contract's events are not complete: version %d where %d is due" % (event_version, version))
            if recorded is not None and at < recorded:
                raise Failed("recorded_at goes back in time")
            if type(e["inclusion"]) is not list or len(e["inclusion"]) > 64:
                raise Failed("the inclusion proof is not a list of at most 64 hashes")
            verify_inclusion(h, seq - 1, size, hashes(e["inclusion"], "an inclusion proof hash"), root)
        except Failed as f:
            raise Failed(str(f), seq)
        except (ValueError, KeyError, IndexError, TypeError) as x:
            raise Failed("malformed: %s" % x, seq)
        recorded = at
        currency = currency or wire["data"].get("currency")
    if len(lines) < len(seqs) + 1:
        raise Failed("missing: the pack ends before it", seqs[len(lines) - 1])
    if len(lines) != len(seqs) + 2:
        raise Failed("no report line" if len(lines) == len(seqs) + 1 else "text after the report line")
    report = record(loads(lines[-1]), ["report"], what="the report line")["report"]
    if not isinstance(report, dict):
        raise Failed("the report is not a JSON object")
    for field, value in (("contract_id", contract), ("as_of", as_of), ("known_at", known_at), ("currency", currency)):
        if not same(report.get(field), value):
            raise Failed("the report's %s is not the pack's" % field)
    return ("evidence pack of contract %s: %d events proven in checkpoint size %d (report figures not recomputed here)"
            % (contract, len(seqs), size)), cosigned


def verify(path, trusted, witnesses, quorum):
    with open(path, "rb") as f:
        data = f.read()
    try:
        data = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Failed("the file is not UTF-8")
    if not data.endswith("\n"):
        raise Failed("the file does not end with a newline (cut off?)")
    lines = data[:-1].split("\n")
    first = loads(lines[0])
    if isinstance(first, dict) and first.get("format") == "compute-ledger-evidence":
        return verify_pack(lines, trusted, witnesses, quorum)
    return verify_bundle(lines, trusted, witnesses, quorum)


def verdict(path, trusted, witnesses, quorum):
    try:
        said, cosigned = verify(path, trusted, witnesses, quorum)
        if cosigned:
            said += "; cosigned by %d witness(es): %s" % (len(cosigned), ", ".join(cosigned))
        return True, "ok: " + said
    except Failed as f:
        return False, "FAILED" + (" at seq %d" % f.seq if f.seq else "") + ": " + str(f)
    except RecursionError:
        return False, "FAILED: nested too deeply"
    except Exception as x:  # anything malformed is a failure, never a pass
        return False, "FAILED: %s" % x


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--key", help="the log's verifier key you trust: NAME+KEYID+BASE64")
    parser.add_argument("--trust-bundle-key", action="store_true", help="no --key: trust the key the file names")
    parser.add_argument("--witness", action="append", default=[], help="a witness's verifier key (type 0x04)")
    parser.add_argument("--witness-quorum", type=int, help="cosignatures required (default: every witness)")
    args = parser.parse_args(argv)
    try:
        trusted = parse_vkey(args.key, 0x01) if args.key else None
        witnesses = [parse_vkey(w, 0x04) for w in args.witness]
    except Failed as f:
        print("verify_bundle.py: %s" % f, file=sys.stderr)
        return 2
    if trusted is None and not args.trust_bundle_key:
        print("verify_bundle.py: give the log's verifier key (--key NAME+KEYID+BASE64) you got from its operator;"
              " --trust-bundle-key trusts the key the file names instead", file=sys.stderr)
        return 2
    if trusted is None:
        print("warning: --trust-bundle-key: trusting the verifier key the file names itself; the signature then proves"
              " nothing about who signed unless you compare that key with one you got elsewhere", file=sys.stderr)
    quorum = args.witness_quorum if args.witness_quorum is not None else len(witnesses)
    if args.witness_quorum is not None and not witnesses:
        print("verify_bundle.py: --witness-quorum needs --witness", file=sys.stderr)
        return 2
    keys = [(n, p) for n, p, _ in witnesses]
    if len(set(p for _, p in keys)) != len(keys) or len(set(w[0::2] for w in witnesses)) != len(keys) or (witnesses and not 1 <= quorum <= len(witnesses)):
        print("verify_bundle.py: each --witness once, and 1 <= --witness-quorum <= their number", file=sys.stderr)
        return 2
    failures = 0
    for path in args.files:
        ok, said = verdict(path, trusted, witnesses, quorum)
        failures += not ok
        print(said if len(args.files) == 1 else "%s: %s" % (path, said))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
