package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Command
		err  error
	}{
		{"simple", "STAT\r\n", Command{Name: "STAT"}, nil},
		{"lower case", "list 1\r\n", Command{Name: "LIST", Args: []string{"1"}, Raw: "1"}, nil},
		{"bare LF", "TOP 1 5\n", Command{Name: "TOP", Args: []string{"1", "5"}, Raw: "1 5"}, nil},
		{"extra spaces", "TOP  1   5", Command{Name: "TOP", Args: []string{"1", "5"}, Raw: " 1   5"}, nil},
		{"pass keeps spaces", "PASS a b  c d e f\r\n", Command{Name: "PASS", Raw: "a b  c d e f"}, nil},
		{"utf8 user", "USER jörg@example.test", Command{Name: "USER", Args: []string{"jörg@example.test"}, Raw: "jörg@example.test"}, nil},
		{"empty", "\r\n", Command{}, ErrEmptyCommand},
		{"short keyword", "US x", Command{}, ErrBadKeyword},
		{"long keyword", "RETRIEVE 1", Command{}, ErrBadKeyword},
		{"digit in keyword", "U2ER x", Command{}, ErrBadKeyword},
		{"leading space", " STAT", Command{}, ErrBadKeyword},
		{"NUL in argument", "USER a\x00b", Command{}, ErrBadArgument},
		{"tab in argument", "USER a\tb", Command{}, ErrBadArgument},
		{"too many arguments", "LIST 1 2 3 4 5", Command{}, ErrTooManyArgs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand([]byte(tt.line))
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseCommand(%q) error = %v; want %v", tt.line, err, tt.err)
			}
			if got.Name != tt.want.Name || got.Raw != tt.want.Raw || !slices.Equal(got.Args, tt.want.Args) {
				t.Errorf("ParseCommand(%q) = %+v; want %+v", tt.line, got, tt.want)
			}
		})
	}
}

func TestDotWriter(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{"plain", []string{"a\r\nb\r\n"}, "a\r\nb\r\n.\r\n"},
		{"leading dot", []string{".a\r\n..\r\n.\r\n"}, "..a\r\n...\r\n..\r\n.\r\n"},
		{"dot across chunks", []string{"a\r\n", ".b\r\n"}, "a\r\n..b\r\n.\r\n"},
		{"CRLF split across chunks", []string{"a\r", "\n.b\r\n"}, "a\r\n..b\r\n.\r\n"},
		{"no final CRLF", []string{"a\r\n.b"}, "a\r\n..b\r\n.\r\n"},
		{"bare LF then dot", []string{"a\n.\r\n"}, "a\n..\r\n.\r\n"},
		{"dot mid-line", []string{"a.b\r\n"}, "a.b\r\n.\r\n"},
		{"empty", nil, ".\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := bufio.NewWriter(&b)
			d := &dotWriter{w: w, bol: true}
			for _, c := range tt.chunks {
				d.Write([]byte(c))
			}
			d.Close()
			w.Flush()
			if b.String() != tt.want {
				t.Errorf("dotWriter(%q) = %q; want %q", tt.chunks, b.String(), tt.want)
			}
		})
	}
}

// countingReader records the furthest byte read, to prove TOP reads only
// what it needs.
type countingReader struct {
	r   *strings.Reader
	max int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.max = max(c.max, off+int64(n))
	return n, err
}

func TestCopyLinesReadsOnlyWhatItNeeds(t *testing.T) {
	body := strings.Repeat("0123456789012345678901234567890123456789\r\n", 100000) // ~4 MB
	tests := []struct {
		name  string
		lines int64
		want  string
	}{
		{"zero", 0, ""},
		{"one", 1, "0123456789012345678901234567890123456789\r\n"},
		{"three", 3, strings.Repeat("0123456789012345678901234567890123456789\r\n", 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := &countingReader{r: strings.NewReader(body)}
			var b bytes.Buffer
			if err := copyLines(&b, cr, 0, int64(len(body)), tt.lines); err != nil {
				t.Fatalf("copyLines = %v", err)
			}
			if b.String() != tt.want {
				t.Errorf("copyLines(%d) = %d bytes; want %d", tt.lines, b.Len(), len(tt.want))
			}
			if cr.max > chunkSize {
				t.Errorf("copyLines(%d) read up to offset %d; want at most %d", tt.lines, cr.max, chunkSize)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"+OK", "+OK", true},
		{"+OK *", "+OK hello", true},
		{"1 *.1", "1 1234.1", true},
		{"1 *.1", "1 1234.2", false},
		{"*", "", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
	}
	for _, tt := range tests {
		if got := match(tt.pattern, tt.s); got != tt.want {
			t.Errorf("match(%q, %q) = %v; want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}
