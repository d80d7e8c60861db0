package message

import (
	"strings"

	"tidings/storage"
)

// BaseSubject returns the RFC 5256 §2.1 base subject of a decoded Subject
// value, folded (storage.Fold) for comparison.
func BaseSubject(subject string) string {
	// (1) Unfolded already; collapse every run of whitespace to one space.
	s := strings.Join(strings.Fields(subject), " ")
	for {
		// (2) Remove trailing "(fwd)" and whitespace, repeatedly.
		for {
			t := strings.TrimRight(s, " ")
			if len(t) >= 5 && strings.EqualFold(t[len(t)-5:], "(fwd)") {
				s = t[:len(t)-5]
				continue
			}
			s = t
			break
		}
		// (3)-(5) Remove leaders and leading blobs until nothing changes.
		for {
			changed := false
			if n := subjLeader(s); n > 0 {
				s, changed = s[n:], true
			}
			if n := subjBlob(s); n > 0 && strings.TrimSpace(s[n:]) != "" {
				s, changed = s[n:], true
			}
			if !changed {
				break
			}
		}
		// (6) "[fwd:" ... "]": unwrap and start again at (2).
		if len(s) >= 6 && strings.EqualFold(s[:5], "[fwd:") && s[len(s)-1] == ']' {
			s = s[5 : len(s)-1]
			continue
		}
		break
	}
	return storage.Fold(strings.TrimSpace(s))
}

// subjBlob returns the length of a leading subj-blob:
// "[" *BLOBCHAR "]" *WSP, or 0.
func subjBlob(s string) int {
	if s == "" || s[0] != '[' {
		return 0
	}
	end := strings.IndexAny(s[1:], "[]")
	if end < 0 || s[1+end] != ']' {
		return 0
	}
	n := end + 2
	for n < len(s) && (s[n] == ' ' || s[n] == '\t') {
		n++
	}
	return n
}

// subjLeader returns the length of a leading subj-leader:
// (*subj-blob subj-refwd) / WSP, where
// subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":".
func subjLeader(s string) int {
	if s != "" && (s[0] == ' ' || s[0] == '\t') {
		return 1
	}
	n := 0
	for {
		b := subjBlob(s[n:])
		if b == 0 {
			break
		}
		n += b
	}
	for _, w := range []string{"re", "fwd", "fw"} {
		if len(s)-n < len(w) || !strings.EqualFold(s[n:n+len(w)], w) {
			continue
		}
		m := n + len(w)
		for m < len(s) && (s[m] == ' ' || s[m] == '\t') {
			m++
		}
		m += subjBlob(s[m:])
		if m < len(s) && s[m] == ':' {
			return m + 1
		}
	}
	return 0
}
