package pop3d

import (
	"errors"
	"strings"
)

// MaxLine is the longest command line accepted, CRLF included. RFC 2449
// §4 caps a command line at 255 octets; clients with long AUTH initial
// responses or passwords overshoot it in practice, so the server is
// lenient up to twice that and answers -ERR beyond.
const MaxLine = 512

// maxArgs bounds the arguments kept from one line (the longest command,
// TOP, has two; AUTH has mechanism and initial response).
const maxArgs = 4

// Command is one parsed client line.
type Command struct {
	Name string   // upper case keyword, e.g. "RETR"
	Args []string // space-separated arguments
	// Raw is everything after the keyword and its space, unsplit: PASS
	// takes it whole, because RFC 1939 §7 lets a password contain spaces.
	Raw string
}

// Errors of ParseCommand.
var (
	ErrEmptyCommand = errors.New("empty command")
	ErrBadKeyword   = errors.New("malformed command keyword")
	ErrBadArgument  = errors.New("malformed argument")
	ErrTooManyArgs  = errors.New("too many arguments")
)

// ParseCommand parses one line (CRLF or LF already removed, or present;
// both are stripped). RFC 1939 §3: a keyword of three or four printable
// ASCII characters, case-insensitive, then arguments separated by single
// spaces. The parser is lenient about runs of spaces between arguments and
// strict about control characters, which have no place in any command and
// would end up in logs.
func ParseCommand(line []byte) (Command, error) {
	s := string(line)
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	if s == "" {
		return Command{}, ErrEmptyCommand
	}
	kw, rest, _ := strings.Cut(s, " ")
	if len(kw) < 3 || len(kw) > 4 {
		return Command{}, ErrBadKeyword
	}
	for i := 0; i < len(kw); i++ {
		c := kw[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return Command{}, ErrBadKeyword
		}
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c < 0x20 || c == 0x7f {
			return Command{}, ErrBadArgument
		}
	}
	cmd := Command{Name: strings.ToUpper(kw), Raw: rest}
	if cmd.Name == "PASS" {
		return cmd, nil // the password is Raw, spaces and all
	}
	if f := strings.Fields(rest); len(f) > 0 {
		if len(f) > maxArgs {
			return Command{}, ErrTooManyArgs
		}
		cmd.Args = f
	}
	return cmd, nil
}
