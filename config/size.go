package config

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// ParseSize reads a byte size such as "500M", "2G", "1.5GB", "64KiB" or
// "1048576". Units are binary (K = 1024), as quota sizes are everywhere in
// mail servers; "B" and an "iB" suffix are accepted and change nothing.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "IB")
	u = strings.TrimSuffix(u, "B")
	mult := int64(1)
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			u = u[:n-1]
		}
	}
	u = strings.TrimSpace(u)
	f, err := strconv.ParseFloat(u, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || u == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit K, M, G or T (e.g. 500M, 2G)", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(v), nil
}

// FormatSize writes n bytes for people: "0", "512 B", "1.5 KB", "2.0 GB"
// (binary units, matching ParseSize).
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "KMGTP"[exp])
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable database URL)"
	}
	return u.Redacted()
}
