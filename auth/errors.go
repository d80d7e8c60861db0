package auth

import (
	"errors"
	"fmt"

	"tidings/storage"
)

// Sentinel errors. Front ends map them to protocol replies at the edge; the
// detail a person or the log needs is in the wrapping message.
var (
	// ErrAuthFailed is the only login failure a client ever sees: unknown
	// user, wrong password, disabled account, policy and authzid refusals
	// all read the same (the log line has the real reason).
	ErrAuthFailed = errors.New("authentication failed")
	// ErrTemporary: the login could not be checked now (hash queue full,
	// store unavailable); the client should retry later.
	ErrTemporary = errors.New("temporary authentication failure")
	// ErrRateLimited: too many recent failures for the client address or
	// the account; no password was checked.
	ErrRateLimited = errors.New("too many failed logins; try again later")
	// ErrDisabled and ErrPolicy name log reasons only; Authenticate returns
	// ErrAuthFailed for them.
	ErrDisabled = errors.New("account disabled")
	ErrPolicy   = errors.New("login not allowed by account policy")
	// ErrUnknownDomain: the address's domain is not served here.
	ErrUnknownDomain = errors.New("domain not served here")
	// ErrBadAddress: the address is malformed or uses a form we refuse for
	// local delivery (source routes, %-hack, bang paths).
	ErrBadAddress = errors.New("malformed address")
	// ErrUnknownRecipient: no account, alias, group or catch-all takes the
	// address (SMTP 550 5.1.1).
	ErrUnknownRecipient = errors.New("unknown recipient")
	// ErrExpansion: alias/group expansion went deeper than MaxDepth or
	// produced more than MaxExpansion recipients. It wraps storage.ErrLimit.
	ErrExpansion = fmt.Errorf("alias expansion: %w", storage.ErrLimit)
)

// lineError is a person-facing one-line message that still unwraps to its
// sentinel, so the CLI prints the line without a trailing sentinel text
// while callers keep using errors.Is.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }

// lineErrorf formats the message of a lineError wrapping sentinel.
func lineErrorf(sentinel error, format string, args ...any) error {
	return &lineError{msg: fmt.Sprintf(format, args...), err: sentinel}
}
