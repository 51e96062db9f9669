// Package notify tells approvers that an approval waits or was decided, by
// mail and by webhook, without ever slowing the request path.
//
// # Never in the way
//
// Notify cleans the event, splits it into deliveries (one mail per
// distinct recipient address, one post per webhook) and queues them; it
// returns at once and never touches the network or Record. Each channel
// (the mail server, each webhook) has its own bounded queue and goroutine,
// so a dead webhook does not delay mail. A full queue drops the new
// delivery and reports it (ReasonQueueFull) rather than grow or block.
//
// # Every outcome reported
//
// Config.Record gets a Delivery for every attempt, and for every delivery
// given up without one (queue full, invalid event or address, Close), so
// that the caller can write a ledger record of kind notification for each.
// A failed attempt is retried after Backoff, doubling, up to MaxAttempts;
// a permanent refusal (an SMTP 5xx, a webhook 4xx other than 408, 425 and
// 429) is final at once. Every attempt of a delivery sends the same bytes,
// the same Message-ID or CloudEvents id, so receivers can drop duplicates.
//
// # Summaries, never bodies
//
// Mail and webhooks leave the building: an Event carries a summary
// (action, app, amount, justification, roles) and a link to
// UIURL/ui/approvals/ID, and has no field for the request body. The
// justification and the action come from the agent, so every text is made
// one line without control or format characters (no CR or LF reaches a
// header, no bidi override reorders a subject), the justification is cut
// to 280 characters, the HTML part is escaped by html/template and Slack
// text has its mrkdwn controls (&, <, >) escaped. Errors in a Delivery and
// in logs never hold a webhook's URL, only its host: its path or query is
// often its secret.
//
// # Mail
//
// One SMTP connection per message (net/smtp), with STARTTLS when
// configured: a server that does not offer it gets nothing rather than
// plain text (ErrNoSTARTTLS). There is no AUTH. A message is
// multipart/alternative, a text/plain and a text/html part, both
// quoted-printable, with From, To, Subject (RFC 2047 encoded and folded
// when not ASCII), Date, Message-ID, MIME-Version and Auto-Submitted.
//
// # Webhooks
//
// Format slack posts {"text": ...}. Format cloudevents posts a CloudEvents
// 1.0 event in structured mode (application/cloudevents+json): type
// com.uapk.approval.pending and so on, source the UI URL, a unique id,
// time, subject the approval ID, and data the summary fields and the link.
// A 2xx answer is delivery; redirects are not followed.
package notify
