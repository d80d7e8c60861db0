package storage

import (
	"context"
	"time"
)

// QueueKind says how a queued message is delivered.
type QueueKind int

const (
	// QueueRemote: SMTP to the recipients' MX (or a smarthost / relay host).
	QueueRemote QueueKind = iota
	// QueueLocal: a local recipient that failed for its own reason after
	// RCPT (quota filled meanwhile, mailbox gone); retried into the store
	// and finally reported by DSN (DESIGN.md §Mail flow).
	QueueLocal
)

// RecipientStatus is one queued recipient's state.
type RecipientStatus int

const (
	RecipientPending   RecipientStatus = iota // not yet delivered; retried at NextAttempt
	RecipientDelivered                        // final: accepted by the next hop / stored
	RecipientFailed                           // final: permanent failure or gave up (DSN due)
)

// QueueRecipient is one recipient row of a queued message, with the RFC
// 3461 parameters that govern its DSN.
type QueueRecipient struct {
	ID          int64
	Address     string // forward path as given (display form)
	ORCPT       string // RFC 3461 ORCPT value ("rfc822;addr"), or ""
	Notify      string // RFC 3461 NOTIFY ("NEVER" or a comma list of SUCCESS,FAILURE,DELAY), "" = default
	Status      RecipientStatus
	Attempts    int
	LastReply   string // last SMTP reply or local error, for DSN and `queue show`
	LastAttempt time.Time
	// Owner is the local account for QueueLocal items.
	Owner AccountID
	// Mailbox is the target mailbox for QueueLocal items (0 = INBOX).
	Mailbox MailboxID
	// Prefix is the per-entry header prefix for QueueLocal items.
	Prefix []byte
	// DSNSent records that the DSN for this recipient's final state (or a
	// delay warning) has been queued, so none is sent twice.
	DSNSent     bool
	DelayWarned bool
}

// QueueMessage is one queued message: a blob reference (counted like a
// mailbox entry) plus recipient rows. Messages for one destination are
// grouped so one SMTP transaction carries all of them.
type QueueMessage struct {
	ID          string // queue id, shown in "250 2.0.0 Ok: queued as <id>" and logs
	Kind        QueueKind
	From        string // reverse path; "" is the null sender (bounces: never bounced)
	Destination string // grouping key: recipient domain (A-label) or relay host
	ENVID       string // RFC 3461
	RET         string // RFC 3461: "FULL" or "HDRS" or ""
	SMTPUTF8    bool
	EightBit    bool   // BODY=8BITMIME
	Prefix      []byte // headers to put before the blob when sending (Received, DKIM-Signature)
	BlobHash    string
	BlobSize    int64
	Created     time.Time
	NextAttempt time.Time
	Expires     time.Time // give-up time (default Created + 5 days)
	Recipients  []QueueRecipient
}

// Size is what the message occupies on the wire: prefix plus blob.
func (m QueueMessage) Size() int64 { return int64(len(m.Prefix)) + m.BlobSize }

// Submission is one message written in a single transaction: local
// mailbox entries plus queued messages (DESIGN.md §Mail flow: local
// delivery and outbound items, all in one transaction).
type Submission struct {
	Targets []DeliveryTarget
	// TargetAddresses[i] is the recipient address of Targets[i]; a target
	// that fails for its own reason (ErrOverQuota, ErrNotFound, ErrLimit) is
	// turned into a recipient of one QueueLocal message carrying
	// LocalTemplate's envelope, in the same transaction, instead of
	// failing.
	TargetAddresses []string
	LocalTemplate   QueueMessage // From, ENVID, RET, ... for the QueueLocal item
	Queue           []QueueMessage
}

// SubmitResult reports a Submit: per-target results (a target converted to
// a queue item has Err nil and Queued true) and the ids of every queued
// message created (Queue order, then the local one if any).
type SubmitResult struct {
	Results  []DeliveryResult
	Queued   []bool
	QueueIDs []string
}

// RecipientOutcome is the result of one delivery attempt for one recipient.
type RecipientOutcome struct {
	ID          int64
	Status      RecipientStatus
	Reply       string
	DSNSent     bool
	DelayWarned bool
}

// QueueFilter selects queued messages for listing.
type QueueFilter struct {
	Kind        *QueueKind
	Destination string
	Limit       int // 0 = 1000
}

// Queue is the durable outbound queue, claimed by lease rows (DESIGN.md
// §Scale-out): Claim runs one short transaction (FOR UPDATE SKIP LOCKED on
// PostgreSQL), the caller delivers outside any transaction, and Record
// writes the outcome in another short one. A claimed message whose holder
// dies is claimable again after the lease expires.
type Queue interface {
	// Submit writes local entries and queued messages in one transaction.
	// src is stored once (durably) before it.
	Submit(ctx context.Context, src BlobSource, sub Submission) (SubmitResult, error)
	// Enqueue queues messages over one blob (no local entries).
	Enqueue(ctx context.Context, src BlobSource, msgs []QueueMessage) ([]string, error)
	// Claim leases up to limit messages due at now (NextAttempt <= now, not
	// leased or lease expired) to holder for lease, with their pending
	// recipients and the failed ones whose DSN is not yet sent (so a DSN
	// lost to a crash is retried rather than leaving the message queued
	// for ever).
	Claim(ctx context.Context, holder string, now time.Time, limit int, lease time.Duration) ([]QueueMessage, error)
	// Record stores the outcome of an attempt by holder, sets NextAttempt
	// (zero = keep), releases the lease, and removes the message (and its
	// blob reference) once no recipient is pending and every DSN is
	// sent. It returns ErrNotFound if the lease was lost.
	Record(ctx context.Context, id, holder string, outcomes []RecipientOutcome, next time.Time) error
	// QueueList lists queued messages (all recipients) for `tidings queue`.
	QueueList(ctx context.Context, f QueueFilter) ([]QueueMessage, error)
	// QueueGet returns one queued message with all recipients.
	QueueGet(ctx context.Context, id string) (QueueMessage, error)
	// QueueRetry makes a message due now.
	QueueRetry(ctx context.Context, id string) error
	// QueueRemove deletes a message (and its blob reference) without DSN.
	QueueRemove(ctx context.Context, id string) error
	// OpenQueueBlob reads a queued message's blob.
	OpenQueueBlob(ctx context.Context, id string) (ReaderAtCloser, error)
}

// Keys holds secrets shared by every node (DESIGN.md §Configuration: DKIM
// keys and the SRS secret live in the store).
type Keys interface {
	// PutDKIMKey stores (replacing) a domain's private key for selector.
	PutDKIMKey(ctx context.Context, k DKIMKey) error
	// DKIMKeys returns a domain's keys (any form of the domain name).
	DKIMKeys(ctx context.Context, domain string) ([]DKIMKey, error)
	// Secret returns the named secret, creating it with gen once if absent
	// (first writer wins, every node gets the same bytes).
	Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error)
}

// DKIMKey is one DKIM signing key.
type DKIMKey struct {
	Domain     string // A-label
	Selector   string
	Algorithm  string // "ed25519-sha256" or "rsa-sha256"
	PrivatePEM []byte // PKCS#8 PEM
	Created    time.Time
}

// Counter is a store-backed sliding-window counter shared by all nodes
// (submission limits per account per hour).
type Counter interface {
	// CountEvent adds n events under key at `at` and returns the total since
	// `since` (including them).
	CountEvent(ctx context.Context, key string, n int, at, since time.Time) (int, error)
}
