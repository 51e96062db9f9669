package server

import (
	"context"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/notify"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// announcer turns approvals' changes into notifications: to the holders of
// the roles still needed when something waits, to the requester when it is
// settled. Each delivery and failure becomes a notification record.
type announcer struct {
	n          *notify.Notifier
	principals func() *rules.Principals
	ledger     *ledger.Ledger
	app        string
	policy     func() string
	log        zerolog.Logger
}

// changed is approvals.Config.Changed: it only queues.
func (an *announcer) changed(change string, a *approvals.Approval, by string) {
	ev := notify.Event{ApprovalID: a.ID, Action: a.Action, App: a.App, Amount: a.Amount, Justification: a.Justification,
		RequiredRoles: a.RequiredRoles, StillNeeded: a.StillNeeded(), DecidedBy: by, ExpiresAt: a.ExpiresAt}
	ps := an.principals()
	switch change {
	case approvals.ChangeCreated, approvals.ChangeDecided:
		ev.Type = notify.TypePending
		if change == approvals.ChangeDecided {
			ev.Type = notify.TypeDecided
		}
		requester := a.OnBehalfOf
		if a.Kind == approvals.KindOverride {
			requester = a.RequestedBy
		}
		for _, p := range ps.All() {
			if p.Email != "" && p.ID != requester && p.ID != a.App && a.Awaits(p.ID, p.Roles) {
				ev.Recipients = append(ev.Recipients, notify.Recipient{ID: p.ID, Email: p.Email})
			}
		}
	case approvals.ChangeApproved, approvals.ChangeRejected, approvals.ChangeExpired:
		ev.Type = map[string]string{approvals.ChangeApproved: notify.TypeApproved, approvals.ChangeRejected: notify.TypeRejected,
			approvals.ChangeExpired: notify.TypeExpired}[change]
		for _, id := range []string{a.OnBehalfOf, a.RequestedBy} {
			if p, ok := ps.Get(id); ok && p.Email != "" && !slices.ContainsFunc(ev.Recipients, func(r notify.Recipient) bool { return r.ID == id }) {
				ev.Recipients = append(ev.Recipients, notify.Recipient{ID: p.ID, Email: p.Email})
			}
		}
	default:
		return
	}
	an.n.Notify(ev)
}

// record writes one delivery's outcome (notify.Config.Record).
func (an *announcer) record(d notify.Delivery) {
	data := record.Notification{Event: d.Event.Type, Channel: d.Channel, Attempt: d.Attempt, Final: d.Final, Error: d.Error}
	reason := record.NotificationDelivered
	if !d.OK {
		reason = record.NotificationFailed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := an.ledger.Append(ctx, ledger.Entry{Kind: record.KindNotification, App: an.app, Action: d.Event.Action,
		ApprovalID: d.Event.ApprovalID, Decision: record.None, Reason: reason, Policy: an.policy(), Data: data.Map()}); err != nil {
		an.log.Error().Err(err).Str("channel", d.Channel).Msg("notification outcome not recorded")
	}
}
