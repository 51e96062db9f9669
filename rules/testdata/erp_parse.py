"""A Python ERP's reading of journal-entry bodies, for the differential test.

Reads a JSON array of base64 request bodies on stdin and writes a JSON array
with, for each, {"ok": true, "amount": "DECIMAL"} or {"ok": false, "error":
TEXT} when this ERP would refuse the body. It parses as a Python service
typically does, json.loads on the raw bytes (which detects UTF-8, UTF-16 and
UTF-32, skips a UTF-8 byte order mark, keeps lone surrogates, takes the last
of repeated keys, and accepts NaN and Infinity), with exact decimals, and
reads the fields by their exact names: amount, credit, debit, and amount,
debit, credit of each element of lines.

The amount is the gate's rule applied to what this ERP read: for each
field, the larger of the sum of its positive values and of its negative
values' absolute values; the largest over the fields. "inf" stands for a
non-finite number.
"""

import base64
import decimal
import json
import sys

FIELDS = ("amount", "credit", "debit")


def money(v):
    if v is None:
        return None
    if isinstance(v, bool):
        # Decimal(True) is 1: an ERP doing Decimal(value) reads a boolean so.
        return decimal.Decimal(int(v))
    if isinstance(v, (int, decimal.Decimal)):
        return decimal.Decimal(v)
    if isinstance(v, float):  # NaN, Infinity
        return decimal.Decimal(v)
    if isinstance(v, str):
        return decimal.Decimal(v)  # raises on what is not a number
    raise ValueError("not a number: %r" % type(v).__name__)


def total(values):
    pos = sum((v for v in values if v > 0), decimal.Decimal(0))
    neg = sum((-v for v in values if v < 0), decimal.Decimal(0))
    return max(pos, neg)


def amount(doc):
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    best = decimal.Decimal(0)
    for f in FIELDS:
        v = money(doc.get(f))
        if v is not None:
            best = max(best, abs(v))
    lines = doc.get("lines")
    if lines is not None:
        if not isinstance(lines, list):
            raise ValueError("lines is not a list")
        for f in FIELDS:
            vals = []
            for line in lines:
                if not isinstance(line, dict):
                    raise ValueError("a line is not an object")
                v = money(line.get(f))
                if v is not None:
                    vals.append(v)
            best = max(best, total(vals))
    return best


def main():
    # Exact: sums and abs round to the context's precision otherwise.
    ctx = decimal.getcontext()
    ctx.prec, ctx.Emax, ctx.Emin = decimal.MAX_PREC, decimal.MAX_EMAX, decimal.MIN_EMIN
    out = []
    for b64 in json.load(sys.stdin):
        body = base64.b64decode(b64)
        try:
            doc = json.loads(body, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
            a = amount(doc)
            out.append({"ok": True, "amount": "inf" if not a.is_finite() else format(a, "f")})
        except (ValueError, TypeError, RecursionError, UnicodeDecodeError, decimal.DecimalException) as e:
            out.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
