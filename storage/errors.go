package storage

import "errors"

// Sentinel errors. Front ends map them to protocol replies at the edge
// (see CONVENTIONS.md §Errors); drivers wrap them with %w.
var (
	ErrNotFound       = errors.New("not found")
	ErrExists         = errors.New("already exists")
	ErrOverQuota      = errors.New("over quota")
	ErrUnavailable    = errors.New("store unavailable")
	ErrResyncRequired = errors.New("changes no longer available; full resync required")
	ErrLimit          = errors.New("limit exceeded")
	ErrInvalid        = errors.New("invalid argument")
	ErrDenied         = errors.New("permission denied")
	ErrNotEmpty       = errors.New("not empty")
	ErrSchema         = errors.New("schema mismatch")
	ErrUnsafe         = errors.New("database durability settings are unsafe")
	ErrModified       = errors.New("modified since")
)
