"""One request with Python's standard library through an HTTP(S) proxy.

usage: python3 urlopen.py '{"proxy":"http://127.0.0.1:8080","cafile":"ca.pem","method":"POST","url":"...","headers":{},"body":"..."}'

Without "cafile" the default context is used, which honours SSL_CERT_FILE.
Prints {"status":N,"headers":{...},"body":"..."} or {"error":"..."} (exit 3).
"""
import json
import ssl
import sys
import urllib.error
import urllib.request


def main():
    a = json.loads(sys.argv[1])
    proxies = {"http": a["proxy"], "https": a["proxy"]}
    if a.get("cafile"):
        ctx = ssl.create_default_context(cafile=a["cafile"])
    else:
        ctx = ssl.create_default_context()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies),
        urllib.request.HTTPSHandler(context=ctx),
    )
    body = a.get("body") or None
    req = urllib.request.Request(
        a["url"],
        data=body.encode() if body is not None else None,
        method=a["method"],
        headers=a.get("headers") or {},
    )
    try:
        with opener.open(req, timeout=30) as resp:
            status, headers, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, headers, data = e.code, e.headers, e.read()
    except Exception as e:  # a refused handshake, a refused CONNECT
        print(json.dumps({"error": repr(e)}))
        sys.exit(3)
    print(json.dumps({"status": status, "headers": dict(headers.items()), "body": data.decode()}))


if __name__ == "__main__":
    main()
