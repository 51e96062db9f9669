// Package upstreamauth holds the ERP credential the proxy sets on every
// request it forwards (upstream_auth in the config file). The agent never
// sees it: the proxy adds it after the gate has allowed the request.
//
// # Kinds
//
// header with value_file: the named header (Authorization, X-Api-Key, ...)
// carries the file's content, surrounding whitespace trimmed. oauth2: the
// client-credentials grant (RFC 6749 section 4.4) through
// golang.org/x/oauth2/clientcredentials, sent as "Authorization: Bearer
// <token>". Source.Kind names the kind for records.
//
// # Rotation
//
// The value file and the client secret file are stat'ed at most once per
// second (os.Stat follows symlinks, so a Kubernetes Secret's ..data swap is
// seen as a new file) and re-read when device, inode, size or modification
// time changed. A re-read that fails, or finds an empty value or one with a
// CR, LF or other control byte, is logged once and reported by Ready; the
// last good value stays in use, since the ERP most likely still accepts it.
// Rotation must replace the file (rename, or the symlink swap Kubernetes
// does): a file rewritten in place can be read half-written, which is
// caught only when its stat changes during the read (the read is then
// discarded and repeated at the next check).
//
// # Tokens
//
// A token is used until min(60 s, a tenth of its lifetime) before its
// expiry. Then the first caller starts one fetch in the background and
// callers go on with the current token; only past its expiry do they wait,
// all for that same fetch. A failed fetch is retried with a back-off of 1 s
// doubling to 30 s, and Ready reports it until a fetch succeeds. Ready also
// starts a due refresh, so readiness recovers on probes alone. Lifetimes
// come from expires_in and are counted on Config.Now from before the
// request; a token without expires_in is used for 5 minutes.
//
// # Secrets
//
// No value, token or client secret appears in an error, a log line or a
// record. Errors from the token endpoint are reduced to an *EndpointError
// (HTTP status and RFC 6749 error code): golang.org/x/oauth2's
// RetrieveError carries the answer's body, where endpoints are known to echo
// the request. The token URL must be https (plain http only to 127.0.0.1,
// localhost or ::1), the default client ignores the environment's proxy
// and follows no redirects, so the secret reaches the configured endpoint
// and nothing else.
package upstreamauth
