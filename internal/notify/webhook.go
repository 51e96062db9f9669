package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// statusError is a webhook's non-2xx answer; its body is not kept (it is
// the receiver's, and may echo the request).
type statusError struct{ code int }

func (e *statusError) Error() string { return "webhook answered " + strconv.Itoa(e.code) }

// post sends one webhook body. The error never holds the URL: its path or
// query is often the webhook's secret (Slack's are).
func (n *Notifier) post(ctx context.Context, rawURL, contentType string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return errors.New("webhook request could not be built")
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "uapk-proxy-notify")
	resp, err := n.cfg.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &statusError{code: resp.StatusCode}
	}
	return nil
}

// webhookHost is a webhook's Channel name part: host[:port] only.
func webhookHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "invalid"
	}
	return u.Host
}

// slackEscape makes text literal in Slack's mrkdwn: without it an agent's
// justification could write <!channel> (notify everyone) or
// <https://elsewhere|Open the approval> (a disguised link).
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func (n *Notifier) slackBody(e *Event) ([]byte, error) {
	v := n.view(e)
	var b strings.Builder
	fmt.Fprintf(&b, "*%s*: %s", v.Headline, slackEscape.Replace(strings.TrimSpace(v.Action+" "+v.Amount)))
	fmt.Fprintf(&b, " (%s)", slackEscape.Replace(v.ID))
	for _, f := range []struct{ name, value string }{
		{"App", v.App},
		{"Justification", v.Justification},
		{"Required roles", v.Roles},
		{"Still needed", v.StillNeeded},
		{"Decided by", v.DecidedBy},
		{"Expires", v.Expires},
	} {
		if f.value != "" {
			fmt.Fprintf(&b, "\n%s: %s", f.name, slackEscape.Replace(f.value))
		}
	}
	fmt.Fprintf(&b, "\n<%s|Open the approval>", slackEscape.Replace(v.Link))
	return json.Marshal(struct {
		Text string `json:"text"`
	}{b.String()})
}

// CloudEvents attributes and payload (CloudEvents 1.0, JSON structured
// mode: the attributes and data in one JSON object).
type cloudEvent struct {
	SpecVersion     string      `json:"specversion"`
	Type            string      `json:"type"`
	Source          string      `json:"source"`
	ID              string      `json:"id"`
	Time            string      `json:"time"`
	Subject         string      `json:"subject"`
	DataContentType string      `json:"datacontenttype"`
	Data            cloudEvData `json:"data"`
}

// cloudEvData is the summary; no request body, no recipients' addresses.
type cloudEvData struct {
	ApprovalID    string   `json:"approval_id"`
	Action        string   `json:"action"`
	App           string   `json:"app"`
	Amount        string   `json:"amount"`
	Justification string   `json:"justification"`
	RequiredRoles []string `json:"required_roles"`
	StillNeeded   []string `json:"still_needed"`
	DecidedBy     string   `json:"decided_by,omitempty"`
	ExpiresAt     string   `json:"expires_at,omitempty"`
	Link          string   `json:"link"`
}

// CloudEventsContentType is the structured mode's media type.
const CloudEventsContentType = "application/cloudevents+json; charset=utf-8"

// cloudEventsType is the CloudEvents type of an event type:
// com.uapk.approval.pending and so on.
func cloudEventsType(t string) string { return "com.uapk." + t }

func (n *Notifier) cloudEventBody(e *Event, id string, at time.Time) ([]byte, error) {
	ce := cloudEvent{
		SpecVersion:     "1.0",
		Type:            cloudEventsType(e.Type),
		Source:          n.cfg.UIURL,
		ID:              id,
		Time:            at.UTC().Format(time.RFC3339Nano),
		Subject:         e.ApprovalID,
		DataContentType: "application/json",
		Data: cloudEvData{
			ApprovalID:    e.ApprovalID,
			Action:        e.Action,
			App:           e.App,
			Amount:        e.Amount,
			Justification: e.Justification,
			RequiredRoles: nonNil(e.RequiredRoles),
			StillNeeded:   nonNil(e.StillNeeded),
			DecidedBy:     e.DecidedBy,
			Link:          n.link(e.ApprovalID),
		},
	}
	if !e.ExpiresAt.IsZero() {
		ce.Data.ExpiresAt = e.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return json.Marshal(ce)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
