#!/usr/bin/env python3
"""Verify a uapk-proxy ledger hash chain, independently of uapk-proxy.

It relies on nothing but the published record format (docs/reference.md,
"Records"): each record is one JSON object with the members v (always 1),
seq (1, 2, 3, ...), time, kind, app, action, decision, reason, approval_id,
digest, policy, data, prev and hash; its numbers are integers, never floats
(amounts are decimal strings); and

    hash = hex(SHA-256( hexdecode(prev) || JCS(record without "hash") ))

where prev is the previous record's hash (64 zeros, that is 32 zero bytes,
for seq 1) and JCS is RFC 8785 canonical JSON.

Usage:
    verify_chain.py records.jsonl            # one record per line ("-": stdin)
    verify_chain.py --url http://127.0.0.1:8090 --token-file DATA/admin.token
    UAPK_ADMIN_TOKEN=... verify_chain.py --url http://127.0.0.1:8090
    verify_chain.py segment.jsonl --prev HEX # a chain that starts mid-way

The admin API wants a bearer token with scope read: --token-file FILE (one
token on one line, such as the DATA/admin.token that uapk-proxy serve writes),
else the environment variable UAPK_ADMIN_TOKEN; it is sent as
"Authorization: Bearer TOKEN". --header 'Authorization: ...' may give the
header itself instead.

Exit status: 0 intact ("ok: N records, head SEQ HASH"), 1 broken ("broken at
seq N: REASON", the first problem found), 2 could not run (bad arguments,
unreadable file, admin API unreachable or refusing the token).

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from typing import Iterable, Iterator

ZERO_HASH = "0" * 64
PAGE = 1000
# RFC 8785 serializes numbers as IEEE 754 doubles; integers beyond this are
# not exactly representable, so the canonical form would not be the integer.
MAX_SAFE_INTEGER = 2**53 - 1

HEX64 = re.compile(r"[0-9a-f]{64}")
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
KINDS = {"request", "approval", "capability", "override", "forward", "checkpoint", "archive", "config",
         "notification", "outcome"}
FIELDS = {
    "v": int, "seq": int, "time": str, "kind": str, "app": str, "action": str,
    "decision": str, "reason": str, "approval_id": str, "digest": str,
    "policy": str, "data": dict, "prev": str, "hash": str,
}


class Invalid(ValueError):
    """A value that has no RFC 8785 form under the ledger's rules."""


class Broken(Exception):
    def __init__(self, seq: int | str, reason: str):
        super().__init__(f"broken at seq {seq}: {reason}")


class UsageError(Exception):
    pass


# --- parsing -----------------------------------------------------------------
# Floats and duplicate keys are not rejected while parsing but turned into
# markers that canonical() refuses, so that the problem is pinned on the one
# record that has it even when a whole page of records is parsed at once.

class _Float(str):
    """A JSON number with a fraction or an exponent, kept as its text."""


class _DuplicateKeys(dict):
    duplicate = ""


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    duplicate = None
    for key, value in pairs:
        if key in obj and duplicate is None:
            duplicate = key
        obj.setdefault(key, value)
    if duplicate is None:
        return obj
    dup = _DuplicateKeys(obj)
    dup.duplicate = duplicate
    return dup


def _constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(text: str):
    """Parses JSON text, keeping enough to refuse what JCS cannot hash."""
    return json.loads(text, parse_float=_Float, parse_constant=_constant, object_pairs_hook=_pairs)


# --- RFC 8785 canonicalization -----------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _quote(s: str) -> str:
    # RFC 8785 3.2.2.2: only these escapes; everything else is the character
    # itself, written as UTF-8 at the end.
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m.group()) or "\\u%04x" % ord(m.group()), s) + '"'


def _utf16_key(s: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the code units do (3.2.3).
    return s.encode("utf-16-be", "surrogatepass")


def _write(value, out: list[str], path: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, _Float):
        raise Invalid(f"{path}: {value} is not an integer (records hold integers or decimal strings, never floats)")
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise Invalid(f"{path}: integer {value} is beyond 2^53-1 and has no exact JCS form")
        out.append(str(value))
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, f"{path}[{i}]")
        out.append("]")
    elif isinstance(value, dict):
        if isinstance(value, _DuplicateKeys):
            raise Invalid(f"{path}: duplicate key {value.duplicate!r}")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _write(value[key], out, f"{path}.{key}")
        out.append("}")
    else:
        raise Invalid(f"{path}: unsupported value of type {type(value).__name__}")


def canonical(value) -> bytes:
    """RFC 8785 canonical JSON of a parsed value, as UTF-8 bytes."""
    out: list[str] = []
    _write(value, out, "$")
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate from a \ud8xx escape
        raise Invalid(f"string is not valid Unicode ({e.reason})") from None


# --- the chain -----------------------------------------------------------------

class Unreadable:
    """A line or page that could not be parsed at all."""

    def __init__(self, reason: str, raw: str = ""):
        self.reason = reason
        m = re.search(r'"seq"\s*:\s*(\d+)', raw)
        self.seq_hint = int(m.group(1)) if m else None


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    return str(value) if isinstance(value, _Float) else json.dumps(value, ensure_ascii=False)


def verify(items: Iterable[tuple[str, object]], prev: str | None = None, strict: bool = False) -> tuple[int, int, str]:
    """Checks records in order; returns (count, head seq, head hash) or raises Broken.

    items yields (where, record) pairs, where names the line or URL for
    messages, and record is a parsed value or an Unreadable.
    prev anchors a chain that does not start at seq 1.
    """
    want_seq: int | None = None
    want_prev = prev
    count, head_seq, head_hash = 0, 0, prev or ZERO_HASH

    for where, rec in items:
        if isinstance(rec, Unreadable):
            raise Broken(want_seq or rec.seq_hint or "?", f"{where}: not a JSON record: {rec.reason}")
        label = want_seq or (rec.get("seq") if isinstance(rec, dict) and _int(rec.get("seq")) else "?")
        if not isinstance(rec, dict):
            raise Broken(label, f"{where}: record is not a JSON object")
        for field in ("v", "seq", "prev", "hash"):
            if field not in rec:
                raise Broken(label, f"{where}: record has no {field!r} field")

        v, seq = rec["v"], rec["seq"]
        if not _int(v) or v != 1:
            raise Broken(label, f"unsupported record version v={_show(v)} (want 1)")
        if not _int(seq) or seq < 1:
            raise Broken(label, f"seq {_show(seq)} is not a positive integer")

        if want_seq is None:  # first record
            if want_prev is None:
                if seq != 1:
                    raise Broken(seq, f"the records start at seq {seq}, not 1; "
                                      f"pass --prev with the hash of seq {seq - 1} to verify from there")
                want_prev = ZERO_HASH
        elif seq != want_seq:
            raise Broken(want_seq, f"expected seq {want_seq}, found seq {seq} (a record is missing, repeated or out of order)")

        got_prev, got_hash = rec["prev"], rec["hash"]
        if not isinstance(got_prev, str) or not HEX64.fullmatch(got_prev):
            raise Broken(seq, f"prev {_show(got_prev)} is not 64 lowercase hex digits")
        if got_prev != want_prev:
            after = "must be 64 zeros for seq 1" if seq == 1 and prev is None else \
                f"does not match the hash of seq {seq - 1} ({want_prev})" if want_seq else \
                f"does not match --prev ({want_prev})"
            raise Broken(seq, f"prev {got_prev} {after}")
        if not isinstance(got_hash, str) or not HEX64.fullmatch(got_hash):
            raise Broken(seq, f"hash {_show(got_hash)} is not 64 lowercase hex digits")

        body = {k: val for k, val in rec.items() if k != "hash"}
        if isinstance(rec, _DuplicateKeys):
            body = _DuplicateKeys(body)
            body.duplicate = rec.duplicate
        try:
            canon = canonical(body)
        except Invalid as e:
            raise Broken(seq, f"cannot canonicalize: {e}") from None
        computed = hashlib.sha256(bytes.fromhex(got_prev) + canon).hexdigest()
        if computed != got_hash:
            raise Broken(seq, f"hash mismatch: record says {got_hash}, recomputed {computed}")

        if strict:
            problem = schema_problem(rec)
            if problem:
                raise Broken(seq, problem)

        count += 1
        head_seq, head_hash = seq, got_hash
        want_seq, want_prev = seq + 1, got_hash

    return count, head_seq, head_hash


def schema_problem(rec: dict) -> str:
    """The first way rec departs from the record format's member list, or ""."""
    for field, kind in FIELDS.items():
        if field not in rec:
            return f"field {field!r} is missing"
        value = rec[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {field!r} is not a JSON {'object' if kind is dict else kind.__name__}"
    extra = sorted(set(rec) - set(FIELDS))
    if extra:
        return f"unexpected field(s) {', '.join(extra)}"
    if not RFC3339_UTC.fullmatch(rec["time"]):
        return f"time {rec['time']!r} is not RFC 3339 UTC"
    if rec["kind"] not in KINDS:
        return f"kind {rec['kind']!r} is not one of {', '.join(sorted(KINDS))}"
    return ""


# --- sources -----------------------------------------------------------------

def read_jsonl(path: str) -> Iterator[tuple[str, object]]:
    f = sys.stdin.buffer if path == "-" else open(path, "rb")
    with f:
        for lineno, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines, e.g. a final newline, hold no record
            where = f"line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, Unreadable(f"not UTF-8 ({e.reason})")
                continue
            try:
                yield where, parse(text)
            except ValueError as e:
                yield where, Unreadable(str(e), text)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses redirects: urllib would send the Authorization header along, to any host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)

HOW_TO_PASS = "pass --token-file FILE (e.g. the proxy's DATA/admin.token) or set UAPK_ADMIN_TOKEN"


def _refusal(url: str, e: urllib.error.HTTPError, sent_token: bool) -> str:
    """A usage error for a 401 or 403, saying how to pass a token."""
    try:
        answer = json.loads(e.read(1 << 16).decode("utf-8"))
        reason = answer.get("reason") if isinstance(answer, dict) else None
    except (ValueError, OSError):
        reason = None
    said = f"HTTP {e.code} {reason or e.reason}"
    if e.code == 403:
        return f"GET {url}: {said}: the token was accepted but lacks scope read; use a token with scope read"
    if sent_token:
        return f"GET {url}: {said}: the admin API does not accept the token sent; check it, or {HOW_TO_PASS}"
    return f"GET {url}: {said}: the admin API wants a token with scope read; {HOW_TO_PASS}"


def read_admin(base: str, start: int, headers: dict[str, str], timeout: float) -> Iterator[tuple[str, object]]:
    """Pages through GET /v1/ledger/records until an empty page."""
    base = base.rstrip("/")
    frm = start
    sent_token = any(k.lower() == "authorization" for k in headers)
    while True:
        url = f"{base}/v1/ledger/records?from={frm}&to={frm + PAGE - 1}"
        req = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        try:
            with _opener.open(req, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            try:
                if e.code in (401, 403):
                    raise UsageError(_refusal(url, e, sent_token)) from None
                raise UsageError(f"GET {url}: HTTP {e.code} {e.reason}") from None
            finally:
                e.close()
        except (urllib.error.URLError, OSError) as e:
            raise UsageError(f"GET {url}: {getattr(e, 'reason', e)}") from None
        try:
            page = parse(body.decode("utf-8"))
        except ValueError as e:  # includes UnicodeDecodeError
            yield f"page from={frm}", Unreadable(str(e))
            return
        if not isinstance(page, list):
            yield f"page from={frm}", Unreadable("the admin API did not answer a JSON array")
            return
        if not page:
            return
        for i, rec in enumerate(page):
            yield f"page from={frm} item {i}", rec
        last = page[-1].get("seq") if isinstance(page[-1], dict) else None
        # Follow what the server sent, so a server with a smaller page size
        # still gets every record asked for; verify() stops on any disorder.
        frm = last + 1 if _int(last) and last >= frm else frm + PAGE


# --- command line ----------------------------------------------------------------

def read_token_file(path: str) -> str:
    """The one token on the one line of path."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except OSError as e:
        raise UsageError(f"--token-file {path}: {e.strerror or e}") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = ""
    if len(raw) > 4096 or not token or any(c.isspace() for c in token):
        raise UsageError(f"--token-file {path}: want one token on one line")
    return token


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Verify a uapk-proxy ledger hash chain (record format: docs/reference.md#records), independently of uapk-proxy.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", help="JSONL file, one record per line ('-' for stdin)")
    src.add_argument("--url", help="admin API base URL, e.g. http://127.0.0.1:8090")
    p.add_argument("--prev", help="hash of the record before the first one, to verify from mid-chain")
    p.add_argument("--from", dest="start", type=int, default=1, help="with --url: first seq to fetch (default 1)")
    p.add_argument("--token-file", metavar="FILE",
                   help="with --url: file holding the admin token (scope read) on one line, e.g. the proxy's "
                        "DATA/admin.token; sent as Authorization: Bearer (default: env UAPK_ADMIN_TOKEN)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="with --url: extra request header (repeatable); an Authorization header here "
                        "takes the place of UAPK_ADMIN_TOKEN, and not with --token-file")
    p.add_argument("--timeout", type=float, default=30, help="with --url: seconds per request (default 30)")
    p.add_argument("--strict", action="store_true",
                   help="also check every record has exactly the record format's members, types, kinds and UTC times")
    args = p.parse_args(argv)

    try:
        if args.prev is not None and not HEX64.fullmatch(args.prev):
            raise UsageError("--prev must be 64 lowercase hex digits")
        if args.url:
            if args.start < 1:
                raise UsageError("--from must be at least 1")
            if args.start > 1 and args.prev is None:
                raise UsageError(f"--from {args.start} needs --prev (the hash of seq {args.start - 1})")
            headers = {}
            for h in args.header:
                name, sep, value = h.partition(":")
                if not sep or not name.strip():
                    raise UsageError(f"--header {h!r}: want 'Name: value'")
                headers[name.strip()] = value.strip()
            explicit = any(k.lower() == "authorization" for k in headers)
            if explicit and args.token_file:
                raise UsageError("--token-file and --header 'Authorization: ...' both give the token; give one")
            token = read_token_file(args.token_file) if args.token_file else \
                os.environ.get("UAPK_ADMIN_TOKEN", "").strip()
            if token and not explicit:
                if any(c.isspace() for c in token):
                    raise UsageError("UAPK_ADMIN_TOKEN: want one token, without spaces")
                headers["Authorization"] = "Bearer " + token
            items = read_admin(args.url, args.start, headers, args.timeout)
        else:
            if args.token_file:
                raise UsageError("--token-file goes with --url")
            items = read_jsonl(args.file)
        count, seq, head = verify(items, prev=args.prev, strict=args.strict)
    except Broken as e:
        print(e)
        return 1
    except (UsageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ok: {count} records, head {seq} {head}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
