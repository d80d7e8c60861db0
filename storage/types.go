package storage

import (
	"encoding/json"
	"time"
)

// IDs. Account and mailbox ids are database row ids; they are stable and
// never reused within one store.
type (
	AccountID int64
	DomainID  int64
	MailboxID int64
	UID       uint32
	ModSeq    uint64
)

// DomainKind says whether mailboxes of a domain live here.
type DomainKind int

const (
	// DomainLocal: mailboxes are in this store.
	DomainLocal DomainKind = iota
	// DomainRemote: mail for listed recipients is accepted and relayed to
	// RelayHost (backup MX / gateway).
	DomainRemote
)

// Domain is a mail domain served by this installation.
type Domain struct {
	ID        DomainID
	Name      string // lower-case A-label; the key
	Display   string // U-label form for people
	Kind      DomainKind
	RelayHost string // DomainRemote only: host[:port]
	CatchAll  string // address that receives mail for unknown local parts, or ""
	Created   time.Time
}

// AccountKind distinguishes user mailboxes from shared ones.
type AccountKind int

const (
	AccountUser   AccountKind = iota
	AccountShared             // no login; reached through rights granted to users
)

// Policy is per-account access policy, kept as a JSON column so it can grow
// without migrations. Empty fields mean "no restriction".
type Policy struct {
	Protocols []string `json:"protocols,omitempty"`  // e.g. "imap", "pop3", "smtp", "http"; empty = all
	Networks  []string `json:"networks,omitempty"`   // CIDR prefixes a client must come from
	Hours     string   `json:"hours,omitempty"`      // "08:00-18:00" in Zone
	Days      string   `json:"days,omitempty"`       // "mon-fri"
	Zone      string   `json:"zone,omitempty"`       // IANA zone for Hours/Days; default UTC
	NotBefore int64    `json:"not_before,omitempty"` // unix microseconds; 0 = no bound
	NotAfter  int64    `json:"not_after,omitempty"`
	// Trashcan: EXPUNGE outside Trash/Junk moves to Trash (imapd, pop3d).
	Trashcan bool `json:"trashcan,omitempty"`
	// Sending limits per hour for submission; 0 = server default.
	MessagesPerHour   int `json:"messages_per_hour,omitempty"`
	RecipientsPerHour int `json:"recipients_per_hour,omitempty"`
}

// Account is a user or shared mailbox account.
type Account struct {
	ID            AccountID
	Domain        DomainID
	Address       string // display form: local part as given, U-label domain
	Key           string // FoldAddress form; unique
	Kind          AccountKind
	DisplayName   string
	PasswordHash  string // PHC-format argon2id; "" = no password login
	CredGen       int64  // bumped on every password change; keys the auth cache
	Enabled       bool
	QuotaBytes    int64 // 0 = unlimited
	QuotaMessages int64 // 0 = unlimited
	UsedBytes     int64
	UsedMessages  int64
	Policy        Policy
	Created       time.Time
}

// NewAccount is the input of CreateAccount. Address must be in a local
// domain that exists. DefaultMailboxes are created in the same transaction.
type NewAccount struct {
	Address          string
	Kind             AccountKind
	DisplayName      string
	PasswordHash     string
	QuotaBytes       int64
	QuotaMessages    int64
	Policy           Policy
	DefaultMailboxes []NewMailbox
}

// RecipientKind says what an address is in the directory.
type RecipientKind int

const (
	RecipientNone RecipientKind = iota
	RecipientAccount
	RecipientAlias
	RecipientGroup
)

// Alias maps one address to one or more target addresses (local or not).
type Alias struct {
	Address string // display form
	Key     string // folded
	Targets []string
	// SendAs lists accounts allowed to use Address as envelope sender and From.
	SendAs []AccountID
}

// Group is a distribution list: mail to Address goes to every member.
type Group struct {
	Address string
	Key     string
	Members []string
}

// Recipient is the result of looking one address up (no expansion).
type Recipient struct {
	Kind    RecipientKind
	Account *Account
	Alias   *Alias
	Group   *Group
}

// Right is one RFC 4314 right letter.
type Right byte

// Rights is a set of RFC 4314 rights, as letters ("lrswipkxtea").
type Rights string

// ACLObject names the object a grant is on.
type ACLObject struct {
	Kind string // "mailbox", "calendar", "addressbook", "domain"
	ID   int64
}

// Grant is one row of the ACL table.
type Grant struct {
	Object  ACLObject
	Grantee AccountID
	Rights  Rights
}

// NewMailbox describes a mailbox to create.
type NewMailbox struct {
	Name       string // UTF-8, '/'-separated hierarchy
	SpecialUse string // "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", or ""
	Subscribed bool
}

// Mailbox is a mailbox with its counters as of the read.
type Mailbox struct {
	ID            MailboxID
	Account       AccountID
	Name          string
	SpecialUse    string
	Subscribed    bool
	UIDValidity   uint32
	UIDNext       UID
	HighestModSeq ModSeq
	Messages      int64
	Unseen        int64
	Deleted       int64  // messages flagged \Deleted
	Size          int64  // sum of entry sizes (prefix included)
	ObjectID      string // MAILBOXID (RFC 8474), stable across renames
	Created       time.Time
}

// Flags are a message's flags. System flags are fields; Keywords are the
// display spellings (compared folded, at most 250 per mailbox, 100 bytes each).
type Flags struct {
	Seen     bool
	Answered bool
	Flagged  bool
	Deleted  bool
	Draft    bool
	Keywords []string
}

// FlagOp is how StoreFlags combines the given flags with the current ones.
type FlagOp int

const (
	FlagsReplace FlagOp = iota
	FlagsAdd
	FlagsRemove
)

// UIDRange is an inclusive range of UIDs; Stop 0 means "to the highest".
type UIDRange struct{ Start, Stop UID }

// UIDSet is a union of ranges. A nil set means "all messages".
type UIDSet []UIDRange

// Contains reports whether uid is in the set (nil contains everything).
func (s UIDSet) Contains(uid UID) bool {
	if s == nil {
		return true
	}
	for _, r := range s {
		if uid >= r.Start && (r.Stop == 0 || uid <= r.Stop) {
			return true
		}
	}
	return false
}

// Message is one mailbox entry's metadata.
type Message struct {
	Mailbox      MailboxID
	UID          UID
	ModSeq       ModSeq
	Flags        Flags
	InternalDate time.Time // microsecond precision, zone preserved
	Size         int64     // len(Prefix) + BlobSize: RFC822.SIZE and POP3 size
	BlobHash     string    // hex SHA-256 of the blob
	BlobSize     int64
	PrefixLen    int
	EmailID      string // EMAILID (RFC 8474)
	ThreadID     string // THREADID (RFC 8474)
	ImportUIDL   string // POP3 UIDL a message was imported with, or ""
	// Analysis is filled only by calls that ask for it (MessageOptions.Analysis).
	Analysis *Analysis
	// Prefix is filled only when asked for (MessageOptions.Prefix).
	Prefix []byte
}

// MessageFlags is a UID with its current flags and MODSEQ (ChangesSince,
// StoreFlags results).
type MessageFlags struct {
	UID    UID
	ModSeq ModSeq
	Flags  Flags
}

// Changes is the result of ChangesSince: every message added or changed
// after the given MODSEQ (ascending UID), every UID expunged after it
// (ascending), and the mailbox's HIGHESTMODSEQ at the read.
type Changes struct {
	Highest  ModSeq
	UIDNext  UID
	Changed  []MessageFlags
	Expunged []UID
}

// AccountChanges is the account-level counterpart: mailboxes created,
// renamed, (un)subscribed or deleted after a MODSEQ.
type AccountChanges struct {
	Highest ModSeq
	Changed []Mailbox
	Deleted []MailboxID
}

// BlobSource is message content ready to store: already spooled, hashed and
// sized (see Spool). Open may be called more than once.
type BlobSource interface {
	Hash() string // hex SHA-256
	Size() int64
	Open() (ReaderAtCloser, error)
}

// NewMessage is one entry to append.
type NewMessage struct {
	Prefix       []byte // per-entry header prefix (Return-Path, Delivered-To, ...); may be nil
	Flags        Flags
	InternalDate time.Time // zero = now
	Analysis     *Analysis // required: from package message
	ImportUIDL   string
}

// AppendResult reports where a message landed.
type AppendResult struct {
	Mailbox     MailboxID
	UIDValidity uint32
	UID         UID
	ModSeq      ModSeq
	EmailID     string
}

// DeliveryTarget is one recipient's entry of a multi-recipient delivery.
type DeliveryTarget struct {
	Owner   AccountID
	Mailbox MailboxID // 0 = the account's INBOX
	Message NewMessage
}

// DeliveryResult is the outcome for one DeliveryTarget: Err is nil (and
// Result valid) or the recipient's own failure (ErrOverQuota, ErrNotFound).
type DeliveryResult struct {
	Result AppendResult
	Err    error
}

// UIDPair maps a source UID to the UID of its copy (COPYUID/MOVE).
type UIDPair struct{ Src, Dst UID }

// CopyResult reports a COPY or MOVE.
type CopyResult struct {
	UIDValidity uint32 // of the destination
	Pairs       []UIDPair
}

// MessageOptions selects the optional parts ListMessages returns.
type MessageOptions struct {
	Analysis bool
	Prefix   bool
}

// Hint says "account A (mailbox M, or the mailbox list when M is 0) changed
// at MODSEQ n". Hints are coalesced and may be repeated or arrive late;
// listeners ask ChangesSince for the truth.
type Hint struct {
	Account AccountID
	Mailbox MailboxID
	ModSeq  ModSeq
}

// Durability is what the store read back of its durability settings.
type Durability struct {
	Driver   string
	Settings map[string]string // e.g. fsync=on, synchronous_commit=on / journal_mode=wal, synchronous=2
	Safe     bool
}

// CheckReport is what Check found (and, with repair, fixed).
type CheckReport struct {
	MailboxCounters int // mailboxes whose counters drifted
	AccountUsage    int // accounts whose quota usage drifted
	BlobRefs        int // blobs whose reference count drifted
	MissingBlobs    int // entries whose blob bytes are gone
	Repaired        bool
	Details         []string
}

// Clean reports whether nothing drifted.
func (r CheckReport) Clean() bool {
	return r.MailboxCounters == 0 && r.AccountUsage == 0 && r.BlobRefs == 0 && r.MissingBlobs == 0
}

// jsonPolicy is used by drivers to store Policy.
func (p Policy) MarshalText() ([]byte, error) {
	type plain Policy
	return json.Marshal(plain(p))
}

func (p *Policy) UnmarshalText(b []byte) error {
	type plain Policy
	if len(b) == 0 {
		*p = Policy{}
		return nil
	}
	return json.Unmarshal(b, (*plain)(p))
}
