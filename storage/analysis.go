package storage

import "time"

// AnalysisVersion is the version of the Analysis record this binary writes.
// Rows with an older version are recomputed by `tidings reindex`.
const AnalysisVersion = 1

// Analysis is the storage-neutral record of one message's structure, produced
// once by package message when the message is written, so no reader ever
// re-parses a message. All offsets are byte offsets into the blob (the
// per-entry prefix is not included; readers add its length).
type Analysis struct {
	Version   int   `json:"v"`
	HeaderLen int64 `json:"hl"` // bytes of the top-level header, including the blank line
	Size      int64 `json:"sz"` // blob size

	// Envelope header fields, raw (unfolded, undecoded) values of the first
	// occurrence, for rendering ENVELOPE exactly (RFC 3501 §7.4.2).
	Envelope RawEnvelope `json:"env"`

	Root Part `json:"p"` // the part tree

	MessageID   string    `json:"mid,omitempty"` // without angle brackets
	InReplyTo   []string  `json:"irt,omitempty"`
	References  []string  `json:"ref,omitempty"`
	ThreadID    string    `json:"tid,omitempty"` // RFC 8474 THREADID, derived from the thread root id
	BaseSubject string    `json:"bs,omitempty"`  // RFC 5256 §2.1, folded
	SentDate    time.Time `json:"sd,omitzero"`   // Date: header, zero if absent or invalid
	Preview     string    `json:"pv,omitempty"`  // at most 256 characters of decoded text
	Attachment  bool      `json:"att,omitempty"`

	// SearchText is the decoded text (headers and text parts, every charset,
	// RFC 2047/2231), folded, capped. It is not stored in the record column:
	// the store writes it to its search table and clears it.
	SearchText string `json:"-"`
	// Truncated notes that a cap (depth, parts, header size, addresses) was
	// hit and some parts became opaque leaves.
	Truncated bool `json:"tr,omitempty"`
}

// RawEnvelope holds the raw values of the envelope fields.
type RawEnvelope struct {
	Date      string `json:"date,omitempty"`
	Subject   string `json:"subject,omitempty"`
	From      string `json:"from,omitempty"`
	Sender    string `json:"sender,omitempty"`
	ReplyTo   string `json:"reply_to,omitempty"`
	To        string `json:"to,omitempty"`
	Cc        string `json:"cc,omitempty"`
	Bcc       string `json:"bcc,omitempty"`
	InReplyTo string `json:"in_reply_to,omitempty"`
	MessageID string `json:"message_id,omitempty"`
}

// Part is one node of the MIME tree (RFC 3501 BODYSTRUCTURE material).
type Part struct {
	Type        string            `json:"t"`            // lower case, e.g. "text"
	Subtype     string            `json:"s"`            // lower case, e.g. "plain"
	Params      map[string]string `json:"pa,omitempty"` // Content-Type parameters, names lower case, RFC 2231 decoded
	ID          string            `json:"id,omitempty"`
	Description string            `json:"de,omitempty"`
	Encoding    string            `json:"en,omitempty"` // Content-Transfer-Encoding, lower case; "" = 7bit
	Disposition string            `json:"di,omitempty"`
	DispParams  map[string]string `json:"dp,omitempty"`
	Language    []string          `json:"la,omitempty"`
	Location    string            `json:"lo,omitempty"`
	MD5         string            `json:"md,omitempty"`

	HeaderStart int64 `json:"hs"` // offset of the part's header
	BodyStart   int64 `json:"bs"` // offset of the part's body (after the blank line)
	BodyEnd     int64 `json:"be"` // offset one past the body
	Lines       int64 `json:"ln"` // body lines

	// Children of a multipart.
	Children []Part `json:"c,omitempty"`
	// Message is the encapsulated message of a message/rfc822 (or
	// message/global) part: its envelope and its body structure.
	Message *EmbeddedMessage `json:"m,omitempty"`
	// Opaque is set when a cap made this part a leaf without analysis.
	Opaque bool `json:"op,omitempty"`
}

// EmbeddedMessage is the analysis of a message/rfc822 body.
type EmbeddedMessage struct {
	Envelope RawEnvelope `json:"env"`
	Root     Part        `json:"p"`
}
