package message

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"tidings/storage"
)

// MaildirInfo describes one message of a Maildir.
type MaildirInfo struct {
	// Name is the file name, with its sub-directory ("cur/..." or "new/...").
	Name string
	// Date is the file's modification time, the delivery time in Maildir.
	Date time.Time
	// Flags come from the ":2," info suffix of the name; lower-case letters
	// are Dovecot keywords, named in the dovecot-keywords file.
	Flags storage.Flags
}

type maildirEntry struct{ sub, name string }

// maildirEntries lists the messages of cur/ and new/, ordered by file name
// (Maildir names start with the delivery time) and then by directory.
func maildirEntries(dir string) ([]maildirEntry, error) {
	var out []maildirEntry
	found := false
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read maildir: %w", err)
		}
		found = true
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
				continue
			}
			out = append(out, maildirEntry{sub, e.Name()})
		}
	}
	if !found {
		return nil, fmt.Errorf("read maildir %s: no cur or new directory: %w", dir, storage.ErrInvalid)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].name != out[j].name {
			return out[i].name < out[j].name
		}
		return out[i].sub < out[j].sub
	})
	return out, nil
}

// CountMaildir returns the number of messages in the Maildir dir, for
// progress reports.
func CountMaildir(dir string) (int, error) {
	e, err := maildirEntries(dir)
	return len(e), err
}

// ReadMaildir calls fn for each message of the Maildir dir (cur/ and new/),
// ordered by file name. The message is streamed from its file with line
// endings converted to CRLF; it is valid only during fn. A file that
// disappears meanwhile (a mail reader moved it) is skipped. An error from fn
// stops the reading and is returned.
func ReadMaildir(dir string, fn func(msg io.Reader, info MaildirInfo) error) error {
	entries, err := maildirEntries(dir)
	if err != nil {
		return err
	}
	keywords := dovecotKeywords(dir)
	for _, e := range entries {
		if err := readMaildirFile(dir, e, keywords, fn); err != nil {
			return err
		}
	}
	return nil
}

func readMaildirFile(dir string, e maildirEntry, keywords map[byte]string, fn func(io.Reader, MaildirInfo) error) error {
	f, err := os.Open(filepath.Join(dir, e.sub, e.name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read maildir: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read maildir: %w", err)
	}
	info := MaildirInfo{
		Name:  e.sub + "/" + e.name,
		Date:  st.ModTime(),
		Flags: maildirFlags(e.name, keywords),
	}
	return fn(ToCRLF(bufio.NewReaderSize(f, 32<<10)), info)
}

// maildirFlags reads the "experimental semantics" info of a Maildir name
// (cr.yp.to/proto/maildir.html): ":2," then flag letters, S Seen,
// R Replied, F Flagged, T Trashed, D Draft. Some systems use "!" or ";"
// instead of ":", which is not allowed in their file names.
func maildirFlags(name string, keywords map[byte]string) storage.Flags {
	var f storage.Flags
	i := strings.LastIndex(name, "2,")
	if i < 1 || !strings.ContainsRune(":!;", rune(name[i-1])) {
		return f
	}
	for _, c := range []byte(name[i+2:]) {
		switch c {
		case 'S':
			f.Seen = true
		case 'R':
			f.Answered = true
		case 'F':
			f.Flagged = true
		case 'T':
			f.Deleted = true
		case 'D':
			f.Draft = true
		default:
			if k, ok := keywords[c]; ok {
				f.Keywords = append(f.Keywords, k)
			}
		}
	}
	return f
}

// dovecotKeywords reads Dovecot's dovecot-keywords file: lines "N name",
// where N 0..25 is the letter 'a'+N in file names. A missing or unreadable
// file means no keywords.
func dovecotKeywords(dir string) map[byte]string {
	f, err := os.Open(filepath.Join(dir, "dovecot-keywords"))
	if err != nil {
		return nil
	}
	defer f.Close()
	m := make(map[byte]string)
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		num, name, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 0 || n > 25 || name == "" {
			continue
		}
		m[byte('a'+n)] = strings.TrimSpace(name)
	}
	return m
}
