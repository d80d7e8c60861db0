package message

import (
	"strconv"
	"strings"
	"time"
)

// ParseDate parses a Date: value leniently: RFC 5322 §3.3 with the obsolete
// forms of §4.3 (two- and three-digit years, alphabetic zones, missing
// seconds), asctime order ("Mon Jan  2 15:04:05 2006", also used by mbox
// From_ lines), comments anywhere, and RFC 3339. It returns the zero time if
// no date can be recognised.
func ParseDate(s string) time.Time {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 256 {
		return time.Time{}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t
	}
	fields := strings.FieldsFunc(stripComments(s), func(r rune) bool {
		return r == ' ' || r == '\t' || r == ',' || r == '\r' || r == '\n'
	})
	day, month, year := -1, 0, -1
	hour, minute, sec := -1, 0, 0
	offset, haveZone := 0, false
	for _, f := range fields {
		lf := strings.ToLower(f)
		switch {
		case (f[0] == '+' || f[0] == '-') && len(f) > 1 && !haveZone && hour >= 0:
			if off, ok := parseOffset(f[1:]); ok {
				if f[0] == '-' {
					off = -off
				}
				offset, haveZone = off, true
			}
		case strings.IndexByte(f, ':') >= 0 && hour < 0:
			h, m, sc, ok := parseClock(f)
			if !ok {
				return time.Time{}
			}
			hour, minute, sec = h, m, sc
		case isDigits(f):
			n, _ := strconv.Atoi(f)
			switch {
			case len(f) <= 2 && day < 0:
				day = n
			case len(f) == 4 && year < 0:
				year = n
			case len(f) <= 3 && year < 0:
				year = fixYear(n, len(f))
			}
		case isAlpha(f):
			if m := monthIndex(lf); m > 0 && month == 0 {
				month = m
			} else if off, ok := zoneOffset(lf); ok && hour >= 0 && !haveZone {
				offset, haveZone = off, true
			}
		}
	}
	if day < 1 || day > 31 || month == 0 || year < 0 || year > 9999 {
		return time.Time{}
	}
	if hour < 0 {
		hour = 0
	}
	loc := time.UTC
	if offset != 0 {
		loc = time.FixedZone("", offset)
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, loc)
	if t.Day() != day {
		return time.Time{} // 31 Feb and the like
	}
	return t
}

func fixYear(n, digits int) int {
	// RFC 5322 §4.3: two digits below 50 are 20xx, others 19xx; three
	// digits are added to 1900.
	switch {
	case digits == 3:
		return n + 1900
	case n < 50:
		return n + 2000
	}
	return n + 1900
}

func parseOffset(s string) (int, bool) {
	s = strings.ReplaceAll(s, ":", "")
	if len(s) != 4 || !isDigits(s) {
		return 0, false
	}
	h, _ := strconv.Atoi(s[:2])
	m, _ := strconv.Atoi(s[2:])
	if h > 23 || m > 59 {
		return 0, false
	}
	return (h*60 + m) * 60, true
}

func parseClock(f string) (h, m, s int, ok bool) {
	if i := strings.IndexByte(f, '.'); i >= 0 {
		f = f[:i] // fractional seconds
	}
	parts := strings.Split(f, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, 0, 0, false
	}
	var v [3]int
	for i, p := range parts {
		if len(p) == 0 || len(p) > 2 || !isDigits(p) {
			return 0, 0, 0, false
		}
		v[i], _ = strconv.Atoi(p)
	}
	if v[0] > 23 || v[1] > 59 || v[2] > 60 {
		return 0, 0, 0, false
	}
	if v[2] == 60 {
		v[2] = 59 // a leap second; time.Date would roll over
	}
	return v[0], v[1], v[2], true
}

func isDigits(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isAlpha(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return s != ""
}

func monthIndex(lf string) int {
	if len(lf) < 3 {
		return 0
	}
	const months = "janfebmaraprmayjunjulaugsepoctnovdec"
	i := strings.Index(months, lf[:3])
	if i < 0 || i%3 != 0 {
		return 0
	}
	return i/3 + 1
}

// zoneOffset knows the zone names of RFC 5322 §4.3. Other alphabetic zones
// (military letters, local abbreviations) mean "unknown", that is UTC.
func zoneOffset(lf string) (int, bool) {
	h := 0
	switch lf {
	case "ut", "gmt", "utc", "z":
	case "edt":
		h = -4
	case "est", "cdt":
		h = -5
	case "cst", "mdt":
		h = -6
	case "mst", "pdt":
		h = -7
	case "pst":
		h = -8
	default:
		if len(lf) > 5 || isWeekday(lf) {
			return 0, false
		}
	}
	return h * 3600, true
}

func isWeekday(lf string) bool {
	if len(lf) < 3 {
		return false
	}
	switch lf[:3] {
	case "mon", "tue", "wed", "thu", "fri", "sat", "sun":
		return true
	}
	return false
}
