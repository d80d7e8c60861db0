package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"tidings/storage"
)

// ObjectOwner is implemented by stores that can name the owner of any ACL
// object. Authorize uses it when present; without it only mailbox
// ownership is recognised (through MailboxByID) and other kinds rely on
// explicit grants.
type ObjectOwner interface {
	ObjectOwner(ctx context.Context, obj storage.ACLObject) (storage.AccountID, error)
}

// Authorize decides whether principal may exercise right on obj: the
// system principal and the object's owner always may; anyone else needs
// the right in an ACL grant (RFC 4314). A refusal wraps storage.ErrDenied.
// Object kinds: "mailbox", "calendar", "addressbook", "domain".
func (d *Directory) Authorize(ctx context.Context, principal storage.AccountID, obj storage.ACLObject, right storage.Right) error {
	if principal == storage.System {
		return nil
	}
	owner, err := d.owner(ctx, principal, obj)
	if err != nil {
		return err
	}
	if owner == principal {
		return d.ownerEnabled(ctx, principal)
	}
	rs, err := d.store.Rights(ctx, obj, principal)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("authorize %s %d: %w", obj.Kind, obj.ID, err)
	}
	if strings.IndexByte(string(rs), byte(right)) >= 0 {
		return d.ownerEnabled(ctx, principal)
	}
	return fmt.Errorf("account %d lacks right %q on %s %d: %w", principal, string(right), obj.Kind, obj.ID, storage.ErrDenied)
}

// ownerEnabled refuses a disabled principal even for its own objects: a
// session that outlived a disable must not keep working.
func (d *Directory) ownerEnabled(ctx context.Context, principal storage.AccountID) error {
	ok, err := d.Enabled(ctx, principal)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("account %d is disabled: %w", principal, storage.ErrDenied)
	}
	return nil
}

// owner returns the owner of obj when it can be told, else 0.
func (d *Directory) owner(ctx context.Context, principal storage.AccountID, obj storage.ACLObject) (storage.AccountID, error) {
	if oo, ok := d.store.(ObjectOwner); ok {
		o, err := oo.ObjectOwner(ctx, obj)
		if errors.Is(err, storage.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("authorize %s %d: %w", obj.Kind, obj.ID, err)
		}
		return o, nil
	}
	if obj.Kind != "mailbox" {
		return 0, nil
	}
	// The mailbox belongs to principal exactly when it is found under
	// principal as owner.
	m, err := d.store.MailboxByID(ctx, storage.System, principal, storage.MailboxID(obj.ID))
	switch {
	case err == nil && m.Account == principal:
		return principal, nil
	case err == nil, errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrDenied):
		return 0, nil
	default:
		return 0, fmt.Errorf("authorize mailbox %d: %w", obj.ID, err)
	}
}
