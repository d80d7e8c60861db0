package storage

import (
	"context"
	"io"
	"time"
)

// ReaderAtCloser reads a blob at offsets, so BODY[section]<partial>, TOP and
// BINARY read only the bytes they need.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// BlobStore keeps message bytes, addressed by hex SHA-256. Reference counts
// live in the metadata store, not here.
type BlobStore interface {
	// Put stores the bytes under hash and returns only when they are durable.
	// Storing an existing hash again is cheap and harmless.
	Put(ctx context.Context, hash string, size int64, r io.Reader) error
	// Open returns a reader for the blob, or ErrNotFound.
	Open(ctx context.Context, hash string) (ReaderAtCloser, error)
	// Exists reports whether the bytes are present.
	Exists(ctx context.Context, hash string) (bool, error)
	// Delete removes the bytes; deleting a missing blob is not an error.
	Delete(ctx context.Context, hash string) error
}

// Principal is the account acting. Store calls on mailbox objects take the
// principal and the owning account (ctx, principal, owner, ...) and run after
// auth.Authorize. Principal 0 is the system (delivery, admin CLI).
type Principal = AccountID

// System is the principal of the server itself (delivery, CLI, sweepers).
const System Principal = 0

// Store is the mailbox store contract. Every method is safe for concurrent
// use. Errors wrap the sentinels of errors.go; a database failure wraps
// ErrUnavailable.
type Store interface {
	// The outbound queue, shared keys and event counters (queue.go).
	Queue
	Keys
	Counter

	// Driver is "postgres" or "sqlite".
	Driver() string
	// Durability reads back the settings that make commits durable.
	Durability(ctx context.Context) (Durability, error)
	// Close stops background work (indexer, listener, sweeper) and closes.
	Close() error

	// Domains.
	CreateDomain(ctx context.Context, d Domain) (Domain, error)
	Domain(ctx context.Context, name string) (Domain, error) // name in any form
	Domains(ctx context.Context) ([]Domain, error)
	UpdateDomain(ctx context.Context, d Domain) error // Kind, RelayHost, CatchAll
	// DeleteDomain refuses (ErrNotEmpty) while accounts other than the
	// built-in aliases exist in it; the domain's aliases and groups go with it.
	DeleteDomain(ctx context.Context, name string) error

	// Accounts.
	CreateAccount(ctx context.Context, a NewAccount) (Account, error)
	Account(ctx context.Context, id AccountID) (Account, error)
	AccountByAddress(ctx context.Context, addr string) (Account, error) // any form; folded inside
	Accounts(ctx context.Context, domain string) ([]Account, error)     // "" = all
	// SetPassword stores a new hash and bumps CredGen; returns the new CredGen.
	SetPassword(ctx context.Context, id AccountID, hash string) (int64, error)
	SetEnabled(ctx context.Context, id AccountID, enabled bool) error
	SetQuota(ctx context.Context, id AccountID, bytes, messages int64) error
	SetPolicy(ctx context.Context, id AccountID, p Policy) error
	// PurgeAccount deletes up to batch messages of a disabled account (and,
	// when none remain, the account itself); done reports completion.
	PurgeAccount(ctx context.Context, id AccountID, batch int) (done bool, err error)

	// Aliases and groups. Addresses in any form.
	CreateAlias(ctx context.Context, a Alias) error
	DeleteAlias(ctx context.Context, addr string) error
	Aliases(ctx context.Context, domain string) ([]Alias, error)
	CreateGroup(ctx context.Context, g Group) error
	DeleteGroup(ctx context.Context, addr string) error
	Groups(ctx context.Context, domain string) ([]Group, error)
	// Lookup says what an exact address is (no subaddress stripping, no
	// expansion, no catch-all: those are auth's routing).
	Lookup(ctx context.Context, addr string) (Recipient, error)

	// Access control rows (RFC 4314). Owners hold all rights implicitly.
	SetRights(ctx context.Context, g Grant) error // empty Rights deletes
	Rights(ctx context.Context, obj ACLObject, grantee AccountID) (Rights, error)
	Grants(ctx context.Context, obj ACLObject) ([]Grant, error)

	// Failed-login limiter, shared by every protocol: Fail records one
	// failure under key and returns the failures since `since`.
	LoginFailure(ctx context.Context, key string, at time.Time, since time.Time) (int, error)
	LoginFailures(ctx context.Context, key string, since time.Time) (int, error)
	ClearLoginFailures(ctx context.Context, key string) error

	// Mailboxes.
	CreateMailbox(ctx context.Context, p Principal, owner AccountID, m NewMailbox) (Mailbox, error)
	Mailboxes(ctx context.Context, p Principal, owner AccountID) ([]Mailbox, error)
	Mailbox(ctx context.Context, p Principal, owner AccountID, name string) (Mailbox, error) // folded compare; "INBOX" any case
	MailboxByID(ctx context.Context, p Principal, owner AccountID, id MailboxID) (Mailbox, error)
	// RenameMailbox renames a mailbox and its children; renaming INBOX moves
	// its messages to a new mailbox and leaves INBOX empty (RFC 9051 §6.3.6).
	RenameMailbox(ctx context.Context, p Principal, owner AccountID, from, to string) error
	// DeleteMailbox removes a mailbox and its messages; INBOX cannot be deleted.
	DeleteMailbox(ctx context.Context, p Principal, owner AccountID, name string) error
	SetSubscribed(ctx context.Context, p Principal, owner AccountID, name string, on bool) error
	AccountChangesSince(ctx context.Context, p Principal, owner AccountID, since ModSeq) (AccountChanges, error)

	// Messages.
	// Append stores src (durably, in the BlobStore) and then, in one short
	// transaction, the entry. ErrOverQuota leaves nothing behind.
	Append(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, src BlobSource, m NewMessage) (AppendResult, error)
	// Deliver stores src once and adds one entry per target in one
	// transaction. A target failing for its own reason (quota, missing
	// mailbox) gets its error in its DeliveryResult and does not fail the
	// others; a store failure fails the call and nothing is committed.
	Deliver(ctx context.Context, src BlobSource, targets []DeliveryTarget) ([]DeliveryResult, error)
	// Messages lists entries with UIDs in set, ascending.
	Messages(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, set UIDSet, opt MessageOptions) ([]Message, error)
	// Snapshot returns the mailbox counters and its UID list from one
	// consistent read (SELECT).
	Snapshot(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID) (Mailbox, []UID, error)
	// ClaimRecent atomically claims \Recent for messages no session has
	// seen yet (first SELECT, not EXAMINE) and returns their UIDs.
	ClaimRecent(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID) ([]UID, error)
	// OpenMessage returns the entry's prefix and a reader over its blob.
	OpenMessage(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, uid UID) (Message, ReaderAtCloser, error)
	// StoreFlags changes flags of the messages in set. With unchangedSince
	// > 0 (CONDSTORE), messages whose MODSEQ is higher are not changed and
	// are returned in failed. Messages whose flags did not change keep their
	// MODSEQ and are not in updated.
	StoreFlags(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, set UIDSet, op FlagOp, f Flags, unchangedSince ModSeq) (updated []MessageFlags, failed []UID, err error)
	// Expunge removes the messages in set that are flagged \Deleted (set nil:
	// all \Deleted), leaving tombstones; returns the UIDs removed.
	Expunge(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, set UIDSet) ([]UID, error)
	// ExpungeUIDs removes the messages in set regardless of \Deleted (MOVE,
	// POP3 DELE at QUIT, trashcan).
	ExpungeUIDs(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, set UIDSet) ([]UID, error)
	// Copy copies messages to dst (same blob, new entries); Move copies and
	// expunges in one transaction.
	Copy(ctx context.Context, p Principal, owner AccountID, src MailboxID, set UIDSet, dstOwner AccountID, dst MailboxID) (CopyResult, error)
	Move(ctx context.Context, p Principal, owner AccountID, src MailboxID, set UIDSet, dstOwner AccountID, dst MailboxID) (CopyResult, error)
	// ChangesSince returns what changed after since (0: everything present).
	// Below the tombstone floor it returns ErrResyncRequired.
	ChangesSince(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, since ModSeq) (Changes, error)
	// Search returns the UIDs (ascending) of messages matching key.
	Search(ctx context.Context, p Principal, owner AccountID, mailbox MailboxID, key SearchKey) ([]UID, error)

	// Hints. Subscribe calls fn (from a store goroutine, never while holding
	// a lock or transaction) for hints about account; cancel stops it. The
	// store also catches up on the subscribed accounts periodically, on
	// listener reconnect and (SQLite) when another process wrote.
	Subscribe(account AccountID, fn func(Hint)) (cancel func())

	// Leases give one holder a named thing across nodes (a POP3 maildrop,
	// later queue items): taken and refreshed in short transactions, never
	// a session-long lock. AcquireLease succeeds when the lease is free,
	// expired, or already held by holder; RefreshLease reports false when
	// holder lost it.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	RefreshLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error

	// Maintenance.
	// SweepBlobs deletes blobs whose reference count has been zero for at
	// least grace; returns how many.
	SweepBlobs(ctx context.Context, grace time.Duration) (int, error)
	// PurgeTombstones drops tombstones older than age and raises floors.
	PurgeTombstones(ctx context.Context, age time.Duration) (int, error)
	// Check recomputes counters, reference counts and quota usage and, with
	// repair, fixes what drifted.
	Check(ctx context.Context, repair bool) (CheckReport, error)
	// WaitIndexed blocks until the search indexer has caught up (tests, CLI).
	WaitIndexed(ctx context.Context) error
}
