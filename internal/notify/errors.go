package notify

import (
	"errors"
	"strings"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidConfig is matched by every *ConfigError: the notify section
	// is not an acceptable configuration (Config.Check, New).
	ErrInvalidConfig = errors.New("invalid notify configuration")

	// ErrClosed is returned by a second Close.
	ErrClosed = errors.New("notifier closed")

	// ErrNoSTARTTLS is wrapped when STARTTLS is configured and the server
	// does not offer it: the mail is not sent in the clear instead.
	ErrNoSTARTTLS = errors.New("smtp server does not offer STARTTLS")
)

// Reasons in Delivery.Error for outcomes the notifier decides itself,
// without a network attempt (Delivery.Attempt is the number of attempts
// made before it).
const (
	// ReasonQueueFull: the channel already held Config.QueueSize
	// deliveries, so Notify dropped this one.
	ReasonQueueFull = "queue_full"
	// ReasonClosed: Close came while the delivery waited for a retry, or
	// its context ended before the delivery could be tried.
	ReasonClosed = "closed"
	// ReasonInvalidEvent: the event has an unknown Type or no ApprovalID.
	ReasonInvalidEvent = "invalid_event"
	// ReasonInvalidAddress: a recipient's email is not a plain address.
	ReasonInvalidAddress = "invalid_address"
)

// Problem is one finding of Config.Check. Path names the key in the config
// file, such as "notify.webhooks[0].url".
type Problem struct {
	Path    string
	Message string
}

// String renders the problem as "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Message }

// ConfigError lists every problem Config.Check found, in a fixed order, so
// that one run of `check` shows them all.
type ConfigError struct {
	Problems []Problem
}

// Error lists the problems one per line, "path: message".
func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }
