package storage

import "time"

// SearchOp is the kind of a search key.
type SearchOp int

const (
	SearchAll        SearchOp = iota
	SearchAnd                 // all Children
	SearchOr                  // any Children
	SearchNot                 // not Children[0]
	SearchText                // Value anywhere in headers or body (folded substring)
	SearchBody                // Value in the body text
	SearchHeader              // Header field Name contains Value ("" = field present)
	SearchUID                 // UID in UIDs
	SearchFlag                // system flag Name ("\\Seen", ...) is set
	SearchKeyword             // keyword Name is set
	SearchBefore              // internal date < Time (date granularity is the caller's)
	SearchSince               // internal date >= Time
	SearchSentBefore          // sent date < Time
	SearchSentSince           // sent date >= Time
	SearchLarger              // size > Size
	SearchSmaller             // size < Size
	SearchModSeq              // modseq >= ModSeq
	SearchEmailID             // EMAILID (RFC 8474) equals Value; copies keep it
)

// MaxSearchDepth bounds nesting of And/Or/Not; deeper criteria get ErrLimit.
const MaxSearchDepth = 64

// SearchKey is one node of a search criteria tree. Text comparisons are
// substring matches on folded text (Fold), so case and normalisation never
// matter.
type SearchKey struct {
	Op       SearchOp
	Children []SearchKey
	Name     string
	Value    string
	UIDs     UIDSet
	Time     time.Time
	Size     int64
	ModSeq   ModSeq
}
