package adminauth

import "errors"

var (
	// ErrMissing: the request carries no Authorization: Bearer header.
	ErrMissing = errors.New("admin token required: send Authorization: Bearer TOKEN")
	// ErrInvalid: the bearer token matches no configured token.
	ErrInvalid = errors.New("admin token not recognised")
	// ErrNoToken: the CLI found no token by flag, environment or data
	// directory.
	ErrNoToken = errors.New("no admin token")
)
