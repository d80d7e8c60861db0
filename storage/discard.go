package storage

import (
	"context"
	"fmt"
	"slices"
	"time"
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
//   - A message Trash already holds (same EMAILID: a client that COPYs to
//     Trash and then EXPUNGEs, as clients without MOVE do) is expunged, not
//     moved a second time. EMAILID is kept by COPY and MOVE and differs
//     between two deliveries of the same bytes, so distinct messages are
//     never merged.
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
			move, drop, err := splitHeld(ctx, s, p, owner, mailbox, set, trash)
			if err != nil {
				return nil, fmt.Errorf("discard from mailbox %d: %w", mailbox, err)
			}
			var uids []UID
			if len(move) > 0 {
				res, err := s.Move(ctx, p, owner, mailbox, move, owner, trash)
				if err != nil {
					return nil, fmt.Errorf("discard from mailbox %d: move to trash: %w", mailbox, err)
				}
				for _, pr := range res.Pairs {
					uids = append(uids, pr.Src)
				}
			}
			if len(drop) > 0 {
				gone, err := s.ExpungeUIDs(ctx, p, owner, mailbox, drop)
				if err != nil {
					return nil, fmt.Errorf("discard from mailbox %d: %w", mailbox, err)
				}
				uids = append(uids, gone...)
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

// splitHeld divides set into the messages to move to trash and those trash
// already holds (same EMAILID), which are only expunged.
func splitHeld(ctx context.Context, s Store, p Principal, owner AccountID, mailbox MailboxID, set UIDSet, trash MailboxID) (move, drop UIDSet, err error) {
	msgs, err := s.Messages(ctx, p, owner, mailbox, set, MessageOptions{})
	if err != nil {
		return nil, nil, err
	}
	held := map[string]bool{}
	const batch = 100 // bounds the OR criteria of one search
	for i := 0; i < len(msgs); i += batch {
		var or []SearchKey
		ids := map[string]bool{}
		for _, m := range msgs[i:min(i+batch, len(msgs))] {
			if m.EmailID != "" && !ids[m.EmailID] {
				ids[m.EmailID] = true
				or = append(or, SearchKey{Op: SearchEmailID, Value: m.EmailID})
			}
		}
		if len(or) == 0 {
			continue
		}
		found, err := s.Search(ctx, p, owner, trash, SearchKey{Op: SearchOr, Children: or})
		if err != nil {
			return nil, nil, err
		}
		if len(found) == 0 {
			continue
		}
		inTrash, err := s.Messages(ctx, p, owner, trash, uidSetOf(found), MessageOptions{})
		if err != nil {
			return nil, nil, err
		}
		for _, t := range inTrash {
			held[t.EmailID] = true
		}
	}
	move, drop = UIDSet{}, UIDSet{}
	for _, m := range msgs {
		r := UIDRange{Start: m.UID, Stop: m.UID}
		if held[m.EmailID] {
			drop = append(drop, r)
		} else {
			move = append(move, r)
		}
	}
	return move, drop, nil
}

func uidSetOf(uids []UID) UIDSet {
	set := make(UIDSet, 0, len(uids))
	for _, u := range uids {
		set = append(set, UIDRange{Start: u, Stop: u})
	}
	return set
}

// PurgeTrash expunges the entries of owner's \Trash and \Junk mailboxes
// whose internal date is before cutoff (the trashcan's retention, default
// 30 days; run daily by serve). It returns how many were removed.
func PurgeTrash(ctx context.Context, s Store, owner AccountID, cutoff time.Time) (int, error) {
	mbs, err := s.Mailboxes(ctx, System, owner)
	if err != nil {
		return 0, fmt.Errorf("purge trash of account %d: %w", owner, err)
	}
	n := 0
	for _, m := range mbs {
		if m.SpecialUse != `\Trash` && m.SpecialUse != `\Junk` {
			continue
		}
		old, err := s.Search(ctx, System, owner, m.ID, SearchKey{Op: SearchBefore, Time: cutoff})
		if err != nil {
			return n, fmt.Errorf("purge trash of account %d: %w", owner, err)
		}
		if len(old) == 0 {
			continue
		}
		gone, err := s.ExpungeUIDs(ctx, System, owner, m.ID, uidSetOf(old))
		if err != nil {
			return n, fmt.Errorf("purge trash of account %d: %w", owner, err)
		}
		n += len(gone)
	}
	return n, nil
}
