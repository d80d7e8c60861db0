package message

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tidings/storage"
)

type mboxMsg1 struct {
	raw  string
	info MboxInfo
}

func readAllMbox(t *testing.T, data string) []mboxMsg1 {
	t.Helper()
	var got []mboxMsg1
	err := ReadMbox(strings.NewReader(data), func(msg io.Reader, info MboxInfo) error {
		b, err := io.ReadAll(msg)
		if err != nil {
			return err
		}
		got = append(got, mboxMsg1{string(b), info})
		return nil
	})
	if err != nil {
		t.Fatalf("ReadMbox() error = %v", err)
	}
	return got
}

// mboxrdQuote is what an mboxrd writer does to a message body.
func mboxrdQuote(msg string) string {
	lines := strings.SplitAfter(msg, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimLeft(l, ">"), "From ") {
			lines[i] = ">" + l
		}
	}
	return strings.Join(lines, "")
}

func TestReadMboxRoundTrip(t *testing.T) {
	msgs := []string{
		"From: a@example.com\nSubject: one\n\nFrom the start\n>From quoted once\n>>From quoted twice\nnot From here\n",
		"From: b@example.com\nSubject: two\n\nbody with blank lines\n\n\nFrom another line after blank\n",
		"From: c@example.com\r\nSubject: three crlf\r\n\r\nalready CRLF\r\n",
		"Subject: empty body\n\n",
	}
	var mbox strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&mbox, "From sender%d@example.com Mon Jan  2 15:04:0%d 2006\n", i, i)
		mbox.WriteString(mboxrdQuote(m))
		mbox.WriteString("\n")
	}
	got := readAllMbox(t, mbox.String())
	if len(got) != len(msgs) {
		t.Fatalf("ReadMbox() gave %d messages; want %d", len(got), len(msgs))
	}
	for i, m := range msgs {
		want := strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
		if got[i].raw != want {
			t.Errorf("message %d = %q; want %q", i, got[i].raw, want)
		}
		if wd := time.Date(2006, 1, 2, 15, 4, i, 0, time.UTC); !got[i].info.Date.Equal(wd) {
			t.Errorf("message %d Date = %v; want %v", i, got[i].info.Date, wd)
		}
		if off := strings.Index(mbox.String(), fmt.Sprintf("From sender%d@", i)); got[i].info.Offset != int64(off) {
			t.Errorf("message %d Offset = %d; want %d", i, got[i].info.Offset, off)
		}
	}
}

func TestReadMboxFlags(t *testing.T) {
	tests := []struct {
		header string
		want   storage.Flags
	}{
		{"", storage.Flags{}},
		{"Status: RO\n", storage.Flags{Seen: true}},
		{"Status: O\n", storage.Flags{}},
		{"Status: RO\nX-Status: AF\n", storage.Flags{Seen: true, Answered: true, Flagged: true}},
		{"X-Status: DT\n", storage.Flags{Deleted: true, Draft: true}},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			data := "From x Mon Jan  2 15:04:05 2006\nSubject: s\n" + tt.header + "\nStatus: R in the body\n\n"
			got := readAllMbox(t, data)
			if len(got) != 1 {
				t.Fatalf("ReadMbox() gave %d messages; want 1", len(got))
			}
			if fmt.Sprint(got[0].info.Flags) != fmt.Sprint(tt.want) {
				t.Errorf("Flags = %+v; want %+v", got[0].info.Flags, tt.want)
			}
		})
	}
}

func TestReadMboxPartialRead(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	data := "From a Mon Jan  2 15:04:05 2006\nSubject: 1\n\n" + long + "\n\nFrom b Mon Jan  2 15:04:05 2006\nSubject: 2\n\nsecond\n"
	var subjects []string
	err := ReadMbox(strings.NewReader(data), func(msg io.Reader, info MboxInfo) error {
		b := make([]byte, 12)
		n, _ := io.ReadFull(msg, b)
		subjects = append(subjects, string(b[:n]))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadMbox() error = %v", err)
	}
	if want := []string{"Subject: 1\r\n", "Subject: 2\r\n"}; fmt.Sprint(subjects) != fmt.Sprint(want) {
		t.Errorf("ReadMbox() read %q; want %q", subjects, want)
	}
}

func TestReadMboxErrors(t *testing.T) {
	stop := errors.New("stop")
	tests := []struct {
		name string
		data string
		fn   func(io.Reader, MboxInfo) error
		want error
	}{
		{"not an mbox", "Subject: x\n\nbody\n", func(io.Reader, MboxInfo) error { return nil }, storage.ErrInvalid},
		{"fn error", "From a b\n\nx\n", func(io.Reader, MboxInfo) error { return stop }, stop},
		{"empty file", "", func(io.Reader, MboxInfo) error { return stop }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ReadMbox(strings.NewReader(tt.data), tt.fn); !errors.Is(err, tt.want) {
				t.Errorf("ReadMbox(%q) error = %v; want %v", tt.data, err, tt.want)
			}
		})
	}
}

func TestToCRLF(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\rb\n\n", "a\rb\r\n\r\n"},
		{"no newline", "no newline"},
		{strings.Repeat("x\n", 20000), strings.Repeat("x\r\n", 20000)},
	}
	for _, tt := range tests {
		// iotest.OneByteReader splits CRLF pairs across reads.
		for _, r := range []io.Reader{strings.NewReader(tt.in), &oneByte{strings.NewReader(tt.in)}} {
			got, err := io.ReadAll(ToCRLF(r))
			if err != nil || string(got) != tt.want {
				t.Errorf("ToCRLF(%.20q) = %.20q, %v; want %.20q", tt.in, got, err, tt.want)
			}
		}
	}
}

type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestReadMaildir(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		path string
		body string
	}{
		{"cur/1700000002.M1P1.host:2,RS", "Subject: replied\n\nb\n"},
		{"cur/1700000001.M1P1.host:2,FSTab", "Subject: flagged\n\nb\n"},
		{"new/1700000003.M1P1.host", "Subject: new\r\n\r\nb\r\n"},
		{"cur/1700000004.M1P1.host:2,D", "Subject: draft\n\nb\n"},
		{"cur/.hidden", "x"},
		{"tmp/1700000000.M1P1.host", "in delivery"},
	}
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.WriteFile(p, []byte(f.body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "dovecot-keywords"), []byte("0 $Label1\n1 Work\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type got struct {
		name, body string
		flags      storage.Flags
	}
	var all []got
	err := ReadMaildir(dir, func(msg io.Reader, info MaildirInfo) error {
		b, err := io.ReadAll(msg)
		if !info.Date.Equal(mtime) {
			t.Errorf("%s Date = %v; want %v", info.Name, info.Date, mtime)
		}
		all = append(all, got{info.Name, string(b), info.Flags})
		return err
	})
	if err != nil {
		t.Fatalf("ReadMaildir() error = %v", err)
	}
	want := []got{
		{"cur/1700000001.M1P1.host:2,FSTab", "Subject: flagged\r\n\r\nb\r\n", storage.Flags{Flagged: true, Seen: true, Deleted: true, Keywords: []string{"$Label1", "Work"}}},
		{"cur/1700000002.M1P1.host:2,RS", "Subject: replied\r\n\r\nb\r\n", storage.Flags{Answered: true, Seen: true}},
		{"new/1700000003.M1P1.host", "Subject: new\r\n\r\nb\r\n", storage.Flags{}},
		{"cur/1700000004.M1P1.host:2,D", "Subject: draft\r\n\r\nb\r\n", storage.Flags{Draft: true}},
	}
	if fmt.Sprintf("%+v", all) != fmt.Sprintf("%+v", want) {
		t.Errorf("ReadMaildir() = %+v; want %+v", all, want)
	}
	if n, err := CountMaildir(dir); n != 4 || err != nil {
		t.Errorf("CountMaildir() = %d, %v; want 4, nil", n, err)
	}
	if _, err := CountMaildir(t.TempDir()); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("CountMaildir(empty dir) error = %v; want %v", err, storage.ErrInvalid)
	}
}

func TestReadMboxThenAnalyze(t *testing.T) {
	data := "From a Mon Jan  2 15:04:05 2006\n" + strings.ReplaceAll(string(load(t, "lf-only.eml")), "\r\n", "\n") + "\n"
	got := readAllMbox(t, data)
	if len(got) != 1 {
		t.Fatalf("ReadMbox() gave %d messages; want 1", len(got))
	}
	raw := []byte(got[0].raw)
	a := analyzeBytes(t, raw, Options{})
	if len(a.Root.Children) != 1 || string(raw[a.Root.Children[0].BodyStart:a.Root.Children[0].BodyEnd]) != "line one\r\nline two" {
		t.Errorf("analysed mbox message parts = %+v", a.Root.Children)
	}
	if bytes.Contains(raw, []byte("\n")) && bytes.Count(raw, []byte("\n")) != bytes.Count(raw, []byte("\r\n")) {
		t.Errorf("message has bare LF: %q", raw)
	}
}

func FuzzReadMbox(f *testing.F) {
	f.Add([]byte("From a Mon Jan  2 15:04:05 2006\nStatus: RO\n\n>From x\n\nFrom b Tue Jan  3 10:00:00 2006\r\nSubject: y\r\n\r\nz"))
	f.Add([]byte("From \n\n\n\nFrom \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := ReadMbox(bytes.NewReader(data), func(msg io.Reader, info MboxInfo) error {
			b, err := io.ReadAll(msg)
			if err != nil {
				return err
			}
			if bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n")) {
				t.Errorf("message %q has a bare LF", b)
			}
			if info.Offset < 0 || info.Offset > int64(len(data)) {
				t.Errorf("Offset = %d; want within [0, %d]", info.Offset, len(data))
			}
			return nil
		})
		if err != nil && !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("ReadMbox() error = %v", err)
		}
	})
}
