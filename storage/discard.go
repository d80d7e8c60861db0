package storage

import (
	"context"
	"fmt"
	"slices"
)

// Discard is the one expunge path of the front ends that remove messages
// for a person: POP3 DELE (applied at QUIT, RFC 1939 §6) and IMAP EXPUNGE
// with the account's trashcan policy. Written once here, over the Store
// interface, so both protocols treat the policy the same way.
//
// With trashcan set (Policy.Trashcan) and mailbox not itself the \Trash or
// \Junk special-use mailbox (RFC 6154), the messages are moved to the
// account's \Trash mailbox; otherwise they are expunged outright. Messages
// already gone (expunged by another session) are skipped silently. It
// returns the UIDs that left mailbox, ascending.
//
// Decisions:
//   - Messages are simply moved, even when Trash already holds a copy of
//     the same blob (an IMAP client that copied before deleting). Two Trash
//     entries cost one blob reference, not a second copy of the bytes, and
//     deciding "the same message" by BlobHash+InternalDate would wrongly
//     merge two deliveries of one message.
//   - An account without a \Trash mailbox (renamed away, deleted) gets a
//     plain expunge: the person asked for deletion and there is nowhere to
//     keep the messages; refusing would leave POP3 QUIT unable to finish.
//   - A nil set is refused with ErrInvalid rather than meaning "every
//     message" (the UIDSet convention), so a caller bug cannot empty a
//     mailbox. An empty non-nil set does nothing.
func Discard(ctx context.Context, s Store, p Principal, owner AccountID, mailbox MailboxID, set UIDSet, trashcan bool) ([]UID, error) {
	if set == nil {
		return nil, fmt.Errorf("discard from mailbox %d: nil UID set: %w", mailbox, ErrInvalid)
	}
	if len(set) == 0 {
		return nil, nil
	}
	if trashcan {
		trash, ok, err := trashFor(ctx, s, p, owner, mailbox)
		if err != nil {
			return nil, fmt.Errorf("discard from mailbox %d: %w", mailbox, err)
		}
		if ok {
			res, err := s.Move(ctx, p, owner, mailbox, set, owner, trash)
			if err != nil {
				return nil, fmt.Errorf("discard from mailbox %d: move to trash: %w", mailbox, err)
			}
			uids := make([]UID, 0, len(res.Pairs))
			for _, pr := range res.Pairs {
				uids = append(uids, pr.Src)
			}
			slices.Sort(uids)
			return uids, nil
		}
	}
	uids, err := s.ExpungeUIDs(ctx, p, owner, mailbox, set)
	if err != nil {
		return nil, fmt.Errorf("discard from mailbox %d: %w", mailbox, err)
	}
	return uids, nil
}

// trashFor returns the \Trash mailbox messages of mailbox should move to,
// or ok false when they should be expunged (mailbox is Trash or Junk, or
// the account has no Trash).
func trashFor(ctx context.Context, s Store, p Principal, owner AccountID, mailbox MailboxID) (MailboxID, bool, error) {
	src, err := s.MailboxByID(ctx, p, owner, mailbox)
	if err != nil {
		return 0, false, err
	}
	if src.SpecialUse == `\Trash` || src.SpecialUse == `\Junk` {
		return 0, false, nil
	}
	mbs, err := s.Mailboxes(ctx, p, owner)
	if err != nil {
		return 0, false, err
	}
	for _, m := range mbs {
		if m.SpecialUse == `\Trash` && m.ID != mailbox {
			return m.ID, true, nil
		}
	}
	return 0, false, nil
}
