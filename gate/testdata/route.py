"""What a Python ERP routes for each request path on stdin (one per line):
the path decoded once (urllib.parse.unquote, as WSGI servers hand it to the
application) and normalised (posixpath.normpath, as frameworks that clean
paths do). Prints one JSON list per line: [decoded, normalised]."""
import json, posixpath, sys, urllib.parse

for line in sys.stdin:
    p = json.loads(line)
    d = urllib.parse.unquote(p, errors="surrogateescape")
    n = posixpath.normpath(d)
    if d.endswith("/") and n != "/":
        n += "/"
    print(json.dumps([d, n], ensure_ascii=True))
