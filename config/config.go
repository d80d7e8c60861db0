package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. Field tags are the TOML keys.
type Config struct {
	// Hostname names this server in banners, EHLO, Received and Message-ID.
	Hostname string `toml:"hostname"`
	// DataDir holds the SQLite database, filesystem blobs and the
	// self-signed certificate. Relative paths are relative to the working
	// directory.
	DataDir string `toml:"data_dir"`
	// Database is "" (SQLite at DataDir/tidings.db) or a postgres:// URL.
	Database string `toml:"database"`
	// DatabaseFile names a file holding Database (a secret: it may carry a
	// password).
	DatabaseFile string `toml:"database_file"`
	// AllowUnsafeDurability lets the server start on a database that may
	// lose acknowledged mail (DESIGN.md §Writing a message).
	AllowUnsafeDurability bool `toml:"allow_unsafe_durability"`
	// TrashRetention is how long entries stay in \Trash and \Junk of
	// accounts with the trashcan policy before the daily purge removes
	// them; 0 keeps them for ever.
	TrashRetention time.Duration `toml:"trash_retention"`

	Blobs  Blobs  `toml:"blobs"`
	TLS    TLS    `toml:"tls"`
	Listen Listen `toml:"listen"`
	Auth   Auth   `toml:"auth"`
	SMTP   SMTP   `toml:"smtp"`
	Log    Log    `toml:"log"`

	// Path is the file the configuration was read from; "" in local mode.
	Path string `toml:"-"`
	// Local is true in local mode (no config file).
	Local bool `toml:"-"`

	blobsDirDefault bool // Blobs.Dir was derived from DataDir
}

// Blob store kinds.
const (
	BlobsFilesystem = "filesystem"
	BlobsDatabase   = "database"
)

// Blobs says where message bytes live.
type Blobs struct {
	// Store is "filesystem" or "database". Default: filesystem with SQLite,
	// database with PostgreSQL (so that several nodes share the bytes).
	Store string `toml:"store"`
	// Dir is the filesystem store's directory (default DataDir/blobs).
	Dir string `toml:"dir"`
}

// TLS holds the certificates and the protocol floor.
type TLS struct {
	// MinVersion is "1.2" or "1.3".
	MinVersion   string        `toml:"min_version"`
	Certificates []Certificate `toml:"certificate"`
}

// Certificate is one certificate/key pair in PEM files. The pair is chosen
// by SNI among the names of the certificate.
type Certificate struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Listen holds the listener addresses; "" disables a listener.
type Listen struct {
	SMTP        string `toml:"smtp"`
	Submission  string `toml:"submission"`
	Submissions string `toml:"submissions"`
	IMAP        string `toml:"imap"`
	IMAPS       string `toml:"imaps"`
	POP3        string `toml:"pop3"`
	POP3S       string `toml:"pop3s"`
	HTTP        string `toml:"http"`

	// ProxyProtocol lists, per listener, the networks (CIDR prefixes or
	// single addresses) of TCP load balancers trusted to send a PROXY
	// protocol header.
	ProxyProtocol ProxyProtocol `toml:"proxy_protocol"`
}

// ProxyProtocol lists trusted networks per listener.
type ProxyProtocol struct {
	SMTP        []string `toml:"smtp"`
	Submission  []string `toml:"submission"`
	Submissions []string `toml:"submissions"`
	IMAP        []string `toml:"imap"`
	IMAPS       []string `toml:"imaps"`
	POP3        []string `toml:"pop3"`
	POP3S       []string `toml:"pop3s"`
	HTTP        []string `toml:"http"`
}

// Auth holds the directory's tunables. Zero values mean auth's defaults.
type Auth struct {
	// SubaddressSeparator is ignored for routing and sender ownership
	// ("alice+lists@" is alice@). "" disables subaddressing.
	SubaddressSeparator string `toml:"subaddress_separator"`
	// FailWindow is how long failed logins are remembered.
	FailWindow time.Duration `toml:"fail_window"`
	// MaxFailuresIP and MaxFailuresAccount are the failed logins allowed
	// within FailWindow per client IP (/64 for IPv6) and per account.
	MaxFailuresIP      int `toml:"max_failures_ip"`
	MaxFailuresAccount int `toml:"max_failures_account"`
	// HashWorkers bounds concurrent password hashing (0 = number of CPUs).
	HashWorkers int `toml:"hash_workers"`
}

// SMTP holds the mail flow's tunables: the SMTP front ends' limits and the
// outbound queue. Zero values mean the packages' defaults.
type SMTP struct {
	// MaxMessageSize is the SIZE limit, e.g. "64M" (552 5.3.4 beyond it).
	MaxMessageSize string `toml:"max_message_size"`
	// MaxRecipients per transaction (452 4.5.3 beyond it).
	MaxRecipients int `toml:"max_recipients"`
	// DMARCReject refuses mail failing DMARC under p=reject with 550 5.7.1;
	// false only records the result.
	DMARCReject *bool `toml:"dmarc_reject"`
	// MessagesPerHour and RecipientsPerHour limit each submission account
	// (451 4.7.0); an account's policy overrides them.
	MessagesPerHour   int `toml:"messages_per_hour"`
	RecipientsPerHour int `toml:"recipients_per_hour"`
	// DNSServer sends every mail-flow DNS query (MX, SPF, DKIM, DMARC) to
	// one server, host:port; "" uses the system resolver.
	DNSServer string `toml:"dns_server"`
	// OutboundPort is the port direct MX delivery connects to (0 = 25,
	// RFC 5321 §4.5.4.2). Only tests and unusual private networks change
	// it; a smarthost names its own port.
	OutboundPort int `toml:"outbound_port"`
	// Smarthost relays all outbound mail through host:port instead of
	// direct MX delivery.
	Smarthost             string `toml:"smarthost"`
	SmarthostUser         string `toml:"smarthost_user"`
	SmarthostPassword     string `toml:"smarthost_password"`
	SmarthostPasswordFile string `toml:"smarthost_password_file"`
	// SmarthostTLS is "starttls" (required), "tls" (implicit) or "none".
	SmarthostTLS string `toml:"smarthost_tls"`
	// GiveUp is how long a message is retried before it bounces; a
	// delay warning goes to the sender after DelayWarning.
	GiveUp       time.Duration `toml:"give_up"`
	DelayWarning time.Duration `toml:"delay_warning"`

	maxBytes int64
}

// MaxMessageBytes is MaxMessageSize in bytes (0 = default).
func (s SMTP) MaxMessageBytes() int64 { return s.maxBytes }

// Log configures the server's log.
type Log struct {
	// Level is "debug", "info", "warn" or "error".
	Level string `toml:"level"`
	// Format is "text" or "json".
	Format string `toml:"format"`
}

// Defaults of keys that do not depend on the mode.
const (
	DefaultDataDir            = "./tidings-data"
	DefaultMinVersion         = "1.2"
	DefaultSubaddress         = "+"
	DefaultFailWindow         = 15 * time.Minute
	DefaultTrashRetention     = 30 * 24 * time.Hour
	DefaultMaxFailuresIP      = 20
	DefaultMaxFailuresAccount = 10
)

// listenerNames are the listener keys, in the order servers open them.
func listenerNames() []string {
	return []string{"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http"}
}

// Listener is one configured listener.
type Listener struct {
	Name string // "smtp", "submission", ...
	Addr string
	// TLS says the protocol starts with a TLS handshake (implicit TLS, RFC
	// 8314) rather than STARTTLS.
	TLS bool
	// Proxy lists the networks trusted to send a PROXY protocol header.
	Proxy []netip.Prefix
}

// Listeners returns the enabled listeners.
func (c *Config) Listeners() []Listener {
	var out []Listener
	for _, name := range listenerNames() {
		addr, proxy := c.Listen.field(name)
		if *addr == "" {
			continue
		}
		l := Listener{Name: name, Addr: *addr}
		switch name {
		case "submissions", "imaps", "pop3s":
			l.TLS = true
		case "http":
			// Local mode serves plain HTTP on loopback so a browser opens it
			// without a certificate warning; a configured server speaks HTTPS.
			l.TLS = !c.Local
		}
		for _, s := range *proxy {
			p, _ := parsePrefix(s) // validated by Validate
			l.Proxy = append(l.Proxy, p)
		}
		out = append(out, l)
	}
	return out
}

func (l *Listen) field(name string) (*string, *[]string) {
	switch name {
	case "smtp":
		return &l.SMTP, &l.ProxyProtocol.SMTP
	case "submission":
		return &l.Submission, &l.ProxyProtocol.Submission
	case "submissions":
		return &l.Submissions, &l.ProxyProtocol.Submissions
	case "imap":
		return &l.IMAP, &l.ProxyProtocol.IMAP
	case "imaps":
		return &l.IMAPS, &l.ProxyProtocol.IMAPS
	case "pop3":
		return &l.POP3, &l.ProxyProtocol.POP3
	case "pop3s":
		return &l.POP3S, &l.ProxyProtocol.POP3S
	case "http":
		return &l.HTTP, &l.ProxyProtocol.HTTP
	}
	panic("config: unknown listener " + name)
}

// localListen are the listeners of local mode: loopback, unprivileged.
func localListen() Listen {
	return Listen{
		SMTP: "127.0.0.1:2525", Submission: "127.0.0.1:2587", Submissions: "127.0.0.1:2465",
		IMAP: "127.0.0.1:2143", IMAPS: "127.0.0.1:2993",
		POP3: "127.0.0.1:2110", POP3S: "127.0.0.1:2995",
		HTTP: "127.0.0.1:8080",
	}
}

// serverListen are the standard ports of a configured server.
func serverListen() Listen {
	return Listen{
		SMTP: ":25", Submission: ":587", Submissions: ":465",
		IMAP: ":143", IMAPS: ":993",
		POP3: ":110", POP3S: ":995",
		HTTP: ":443",
	}
}

// defaults returns a Config with every mode-independent default set. The
// mode-dependent ones (listeners, blob store) are set by the caller or by
// finish.
func defaults() *Config {
	return &Config{
		DataDir:        DefaultDataDir,
		TrashRetention: DefaultTrashRetention,
		TLS:            TLS{MinVersion: DefaultMinVersion},
		Auth: Auth{
			SubaddressSeparator: DefaultSubaddress,
			FailWindow:          DefaultFailWindow,
			MaxFailuresIP:       DefaultMaxFailuresIP,
			MaxFailuresAccount:  DefaultMaxFailuresAccount,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Local returns the configuration of local mode: no config file, data in
// dataDir ("" = ./tidings-data), SQLite, loopback listeners at the ports of
// the README.
func Local(dataDir string) (*Config, error) {
	c := defaults()
	c.Local = true
	c.Listen = localListen()
	if dataDir != "" {
		c.DataDir = dataDir
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads the configuration file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

// Parse reads a configuration from b; name is used in error messages and
// recorded as Path.
func Parse(name string, b []byte) (*Config, error) {
	c := defaults()
	c.Listen = serverListen()
	c.Path = name
	// Decoding into the filled defaults keeps every key not in the file at
	// its default, and lets an explicit "" disable a listener.
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return nil, fmt.Errorf("config: %s: line %d: %s: %s", name, pe.Position.Line, pe.LastKey, oneLine(pe.Message))
			}
			return nil, fmt.Errorf("config: %s: line %d: %s", name, pe.Position.Line, oneLine(pe.Message))
		}
		return nil, fmt.Errorf("config: %s: %v", name, oneLine(err.Error()))
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("config: unknown key %q in %s", und[0].String(), name)
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return c, nil
}

// finish resolves *_file keys and mode-dependent defaults, then validates.
func (c *Config) finish() error {
	if c.DatabaseFile != "" {
		if c.Database != "" {
			return c.errorf("database", "set either database or database_file, not both")
		}
		b, err := os.ReadFile(c.DatabaseFile)
		if err != nil {
			return c.errorf("database_file", "%v", err)
		}
		c.Database = strings.TrimSpace(string(b))
		if c.Database == "" {
			return c.errorf("database_file", "%s is empty", c.DatabaseFile)
		}
	}
	if c.SMTP.SmarthostPasswordFile != "" {
		if c.SMTP.SmarthostPassword != "" {
			return c.errorf("smtp.smarthost_password", "set either smarthost_password or smarthost_password_file, not both")
		}
		b, err := os.ReadFile(c.SMTP.SmarthostPasswordFile)
		if err != nil {
			return c.errorf("smtp.smarthost_password_file", "%v", err)
		}
		c.SMTP.SmarthostPassword = strings.TrimSpace(string(b))
	}
	if c.SMTP.MaxMessageSize != "" {
		n, err := ParseSize(c.SMTP.MaxMessageSize)
		if err != nil || n <= 0 {
			return c.errorf("smtp.max_message_size", "want a size such as \"64M\", not %q", c.SMTP.MaxMessageSize)
		}
		c.SMTP.maxBytes = n
	}
	switch c.SMTP.SmarthostTLS {
	case "", "starttls", "tls", "none":
	default:
		return c.errorf("smtp.smarthost_tls", "want starttls, tls or none, not %q", c.SMTP.SmarthostTLS)
	}
	if c.SMTP.OutboundPort < 0 || c.SMTP.OutboundPort > 65535 {
		return c.errorf("smtp.outbound_port", "want a port from 1 to 65535, not %d", c.SMTP.OutboundPort)
	}
	if c.SMTP.MaxRecipients < 0 || c.SMTP.MessagesPerHour < 0 || c.SMTP.RecipientsPerHour < 0 || c.SMTP.GiveUp < 0 || c.SMTP.DelayWarning < 0 {
		return c.errorf("smtp", "limits and durations must not be negative")
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if c.Blobs.Store == "" {
		if c.Driver() == "postgres" {
			c.Blobs.Store = BlobsDatabase
		} else {
			c.Blobs.Store = BlobsFilesystem
		}
	}
	if c.Blobs.Dir == "" || c.blobsDirDefault {
		c.Blobs.Dir = filepath.Join(c.DataDir, "blobs")
		c.blobsDirDefault = true
	}
	return c.Validate()
}

// SetDataDir overrides data_dir (the --data flag) and the paths derived
// from it that the file did not set.
func (c *Config) SetDataDir(dir string) error {
	c.DataDir = dir
	return c.finish()
}

// Driver returns the storage driver the configuration names: "sqlite" or
// "postgres".
func (c *Config) Driver() string {
	if strings.HasPrefix(c.Database, "postgres://") || strings.HasPrefix(c.Database, "postgresql://") {
		return "postgres"
	}
	return "sqlite"
}

// SQLitePath is the SQLite database file.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "tidings.db") }

// TLSDir is where the self-signed certificate is kept.
func (c *Config) TLSDir() string { return filepath.Join(c.DataDir, "tls") }

// Validate checks every key; the error names the first bad one.
func (c *Config) Validate() error {
	if strings.ContainsAny(c.Hostname, " \t\r\n/@") {
		return c.errorf("hostname", "%q is not a host name", c.Hostname)
	}
	if c.DataDir == "" {
		return c.errorf("data_dir", "must not be empty")
	}
	if c.Database != "" && c.Driver() != "postgres" {
		return c.errorf("database", "must be empty (SQLite in data_dir) or a postgres:// URL")
	}
	switch c.Blobs.Store {
	case BlobsFilesystem, BlobsDatabase:
	default:
		return c.errorf("blobs.store", "%q: must be %q or %q", c.Blobs.Store, BlobsFilesystem, BlobsDatabase)
	}
	switch c.TLS.MinVersion {
	case "1.2", "1.3":
	default:
		return c.errorf("tls.min_version", "%q: must be \"1.2\" or \"1.3\"", c.TLS.MinVersion)
	}
	for i, cert := range c.TLS.Certificates {
		if cert.CertFile == "" || cert.KeyFile == "" {
			return c.errorf(fmt.Sprintf("tls.certificate[%d]", i), "needs both cert_file and key_file")
		}
	}
	seen := map[string]string{}
	for _, name := range listenerNames() {
		addr, proxy := c.Listen.field(name)
		if *addr != "" {
			host, port, err := net.SplitHostPort(*addr)
			if err != nil {
				return c.errorf("listen."+name, "%q: want host:port or :port", *addr)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				return c.errorf("listen."+name, "%q: bad port", *addr)
			}
			if host != "" {
				if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && host != "localhost" {
					return c.errorf("listen."+name, "%q: host must be an IP address", *addr)
				}
			}
			if other, ok := seen[*addr]; ok && !strings.HasSuffix(*addr, ":0") {
				return c.errorf("listen."+name, "%q is also listen.%s", *addr, other)
			}
			seen[*addr] = name
		}
		for _, s := range *proxy {
			if _, err := parsePrefix(s); err != nil {
				return c.errorf("listen.proxy_protocol."+name, "%q is not a network (want e.g. 10.0.0.0/8)", s)
			}
		}
	}
	if len(c.Auth.SubaddressSeparator) > 1 || strings.ContainsAny(c.Auth.SubaddressSeparator, "@ \t\"") {
		return c.errorf("auth.subaddress_separator", "%q: must be one character other than @, space or quote, or empty", c.Auth.SubaddressSeparator)
	}
	if c.TrashRetention < 0 {
		return c.errorf("trash_retention", "must not be negative, e.g. \"720h\" (0 keeps trash for ever)")
	}
	if c.Auth.FailWindow <= 0 {
		return c.errorf("auth.fail_window", "must be positive, e.g. \"15m\"")
	}
	if c.Auth.MaxFailuresIP <= 0 {
		return c.errorf("auth.max_failures_ip", "must be positive")
	}
	if c.Auth.MaxFailuresAccount <= 0 {
		return c.errorf("auth.max_failures_account", "must be positive")
	}
	if c.Auth.HashWorkers < 0 {
		return c.errorf("auth.hash_workers", "must not be negative")
	}
	if _, err := c.level(); err != nil {
		return err
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return c.errorf("log.format", "%q: must be \"text\" or \"json\"", c.Log.Format)
	}
	return nil
}

// errorf makes the one-line error naming key.
func (c *Config) errorf(key, format string, args ...any) error {
	where := c.Path
	if where == "" {
		where = "local mode"
	}
	return fmt.Errorf("config: %s: %s: %s", where, key, fmt.Sprintf(format, args...))
}

func (c *Config) level() (slog.Level, error) {
	switch strings.ToLower(c.Log.Level) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, c.errorf("log.level", "%q: must be debug, info, warn or error", c.Log.Level)
}

// Logger returns the server's logger writing to w with the configured level
// and format.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	lvl, _ := c.level() // validated
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// RedactedDatabase is Database fit for a log line: the password, if any, is
// replaced.
func (c *Config) RedactedDatabase() string {
	if c.Driver() != "postgres" {
		return c.SQLitePath()
	}
	return redactURL(c.Database)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
