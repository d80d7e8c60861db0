package delivery

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"tidings/auth"
	"tidings/storage"
)

// DefaultExpire is how long a queued message is retried before it gives
// up (the default of 5 days).
const DefaultExpire = 5 * 24 * time.Hour

// NewQueueID returns a fresh queue id: 16 characters of base32, sortable
// enough for people and unique without coordination between nodes.
func NewQueueID() string {
	const alphabet = "0123456789BCDFGHJKLMNPQRSTVWXYZ"
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// Deliver stores an accepted message: one entry per local mailbox, with
// its own header prefix (Return-Path, Delivered-To, X-Original-To for
// recipients reached through an alias, group or catch-all, then
// env.Prefix), plus queued copies for remote destinations, in ONE store
// transaction (storage.Queue.Submit). A local target that fails for its
// own reason becomes a local-delivery queue item in the same transaction.
// It returns the queue id to announce ("250 2.0.0 Ok: queued as <id>");
// a store failure wraps storage.ErrUnavailable (451 4.3.0).
func (l *Local) Deliver(ctx context.Context, env Envelope, src storage.BlobSource, a *storage.Analysis) (string, error) {
	if env.ID == "" {
		env.ID = NewQueueID()
	}
	now := time.Now()
	var sub storage.Submission
	seen := map[storage.AccountID]bool{}
	remote := map[string]*storage.QueueMessage{} // destination → message
	var order []string
	queue := func(kind, dest, from string, rcpt Recipient, addr string) {
		key := kind + "|" + dest + "|" + from
		m := remote[key]
		if m == nil {
			m = &storage.QueueMessage{
				Kind: storage.QueueRemote, From: from, Destination: dest,
				ENVID: env.ENVID, RET: env.RET, SMTPUTF8: env.SMTPUTF8, EightBit: env.EightBit,
				BlobHash: src.Hash(), BlobSize: src.Size(),
				Created: now, NextAttempt: now, Expires: now.Add(DefaultExpire),
			}
			remote[key] = m
			order = append(order, key)
		}
		for _, r := range m.Recipients {
			if strings.EqualFold(r.Address, addr) {
				return
			}
		}
		m.Recipients = append(m.Recipients, storage.QueueRecipient{Address: addr, ORCPT: rcpt.ORCPT, Notify: rcpt.Notify})
	}
	for _, rcpt := range env.Recipients {
		if rcpt.Route.Remote {
			queue("remote", rcpt.Route.Domain, env.From, rcpt, rcpt.Address)
			continue
		}
		for _, r := range rcpt.Route.Routes {
			switch {
			case r.Account != nil:
				if seen[r.Account.ID] {
					continue // one copy per mailbox (aliases and groups overlap)
				}
				seen[r.Account.ID] = true
				prefix := entryPrefix(env.From, r.Account.Address, rcpt.Address, r.ViaAlias, env.Prefix)
				sub.Targets = append(sub.Targets, storage.DeliveryTarget{
					Owner:   r.Account.ID,
					Message: storage.NewMessage{Prefix: prefix, InternalDate: now, Analysis: a},
				})
				sub.TargetAddresses = append(sub.TargetAddresses, r.Account.Address)
			case r.Relay != "":
				// A relayed (backup MX) domain: the sender stays as it is;
				// the next hop is the domain's own server.
				queue("relay", strings.ToLower(r.Relay), env.From, rcpt, r.External)
			default:
				// An alias target outside our domains: a forward, whose
				// sender is rewritten with SRS (DESIGN.md §Mail flow).
				from := env.From
				if from != "" && l.deps.SRS != nil {
					f, err := l.deps.SRS.Forward(from)
					if err != nil {
						l.log.Warn("srs rewrite failed; sender kept", "id", env.ID, "sender", from, "err", err)
					} else {
						from = f
					}
				}
				dom := ""
				if ta, err := auth.ParseAddress(r.External); err == nil {
					dom = ta.Domain
				}
				queue("forward", dom, from, rcpt, r.External)
			}
		}
	}

	var sig []byte
	if len(order) > 0 && env.Submission && env.SignDomain != "" && l.deps.Signer != nil {
		s, err := l.sign(ctx, env, src)
		if err != nil {
			// A missing signature costs deliverability, not the message.
			l.log.Warn("dkim signing failed; sending unsigned", "id", env.ID, "domain", env.SignDomain, "err", err)
		}
		sig = s
	}
	for i, k := range order {
		m := remote[k]
		m.Prefix = append(append([]byte(nil), sig...), env.Prefix...)
		m.ID = env.ID
		if i > 0 {
			m.ID = fmt.Sprintf("%s%d", env.ID, i)
		}
		sub.Queue = append(sub.Queue, *m)
	}
	sub.LocalTemplate = storage.QueueMessage{
		ID: env.ID + "L", Kind: storage.QueueLocal, From: env.From, ENVID: env.ENVID, RET: env.RET,
		SMTPUTF8: env.SMTPUTF8, EightBit: env.EightBit, BlobHash: src.Hash(), BlobSize: src.Size(),
		Created: now, NextAttempt: now.Add(5 * time.Minute), Expires: now.Add(DefaultExpire),
	}

	id, err := l.submit(ctx, env, src, sub)
	if err != nil {
		return "", err
	}
	if len(sub.Queue) > 0 && l.deps.Kick != nil {
		l.deps.Kick()
	}
	return id, nil
}

// sign computes the DKIM-Signature over what the next hop receives:
// env.Prefix followed by the blob.
func (l *Local) sign(ctx context.Context, env Envelope, src storage.BlobSource) ([]byte, error) {
	rd, err := src.Open()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	r := io.MultiReader(bytes.NewReader(env.Prefix), io.NewSectionReader(rd, 0, src.Size()))
	return l.deps.Signer.Sign(ctx, env.SignDomain, r)
}

// submit writes sub in one transaction and logs one line per recipient.
func (l *Local) submit(ctx context.Context, env Envelope, src storage.BlobSource, sub storage.Submission) (string, error) {
	res, err := l.deps.Store.Submit(ctx, src, sub)
	if err != nil {
		if !errors.Is(err, storage.ErrUnavailable) {
			err = fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
		return "", fmt.Errorf("deliver %s: %w", env.ID, err)
	}
	for i, r := range res.Results {
		addr := sub.TargetAddresses[i]
		switch {
		case i < len(res.Queued) && res.Queued[i]:
			l.log.Info("deferred", "id", env.ID, "to", addr, "reason", "local delivery queued")
		case r.Err != nil:
			l.log.Warn("deferred", "id", env.ID, "to", addr, "err", r.Err)
		default:
			l.log.Info("delivered", "id", env.ID, "to", addr, "uid", r.Result.UID)
		}
	}
	for _, m := range sub.Queue {
		for _, r := range m.Recipients {
			l.log.Info("queued", "id", env.ID, "to", r.Address, "destination", m.Destination)
		}
	}
	id := env.ID
	if len(res.QueueIDs) > 0 && len(sub.Queue) > 0 {
		id = res.QueueIDs[0]
	}
	return id, nil
}

// entryPrefix is the per-entry header prefix (DESIGN.md §Mail flow, final
// delivery headers): Return-Path (RFC 5321 §4.4), Delivered-To, and
// X-Original-To when an alias, group or catch-all led here, then the
// fields common to every copy.
func entryPrefix(from, deliveredTo, original string, via bool, common []byte) []byte {
	var b bytes.Buffer
	b.WriteString("Return-Path: <" + headerSafe(from) + ">\r\n")
	b.WriteString("Delivered-To: " + headerSafe(deliveredTo) + "\r\n")
	if via {
		b.WriteString("X-Original-To: " + headerSafe(original) + "\r\n")
	}
	b.Write(common)
	return b.Bytes()
}

// headerSafe drops CR and LF so an address can never start a new header
// field (the parsers refuse them already; this is the last line).
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
