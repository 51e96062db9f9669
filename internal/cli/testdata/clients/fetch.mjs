// One request with Node's built-in fetch through an HTTP(S) proxy, the way
// an agent would make it: fetch takes no proxy settings of its own, so a
// proxy agent from undici becomes the global dispatcher. The CA is trusted
// through NODE_EXTRA_CA_CERTS, set by the caller.
//
// usage: node fetch.mjs '{"proxy":"http://127.0.0.1:8080","method":"POST","url":"...","headers":{},"body":"..."}'
// prints {"status":N,"headers":{...},"body":"..."} or {"error":"..."} (exit 3)
import { ProxyAgent, setGlobalDispatcher } from 'undici';

const a = JSON.parse(process.argv[2]);
setGlobalDispatcher(new ProxyAgent(a.proxy));
try {
  const res = await fetch(a.url, {
    method: a.method,
    headers: a.headers || {},
    body: a.body ? a.body : undefined,
    signal: AbortSignal.timeout(30000),
  });
  const body = await res.text();
  console.log(JSON.stringify({ status: res.status, headers: Object.fromEntries(res.headers), body }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) + (e.cause ? ': ' + String(e.cause) : '') }));
  process.exit(3);
}
