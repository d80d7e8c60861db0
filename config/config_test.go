package config_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tidings/config"
)

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	c, err := config.Local(dir)
	if err != nil {
		t.Fatalf("Local(%q) = %v", dir, err)
	}
	if !c.Local || c.DataDir != dir || c.Driver() != "sqlite" || c.Blobs.Store != config.BlobsFilesystem {
		t.Errorf("Local(%q) = local %v, data %q, driver %q, blobs %q; want local sqlite filesystem", dir, c.Local, c.DataDir, c.Driver(), c.Blobs.Store)
	}
	if want := filepath.Join(dir, "blobs"); c.Blobs.Dir != want {
		t.Errorf("Local(%q).Blobs.Dir = %q; want %q", dir, c.Blobs.Dir, want)
	}
	want := map[string]string{
		"smtp": "127.0.0.1:2525", "submission": "127.0.0.1:2587", "submissions": "127.0.0.1:2465",
		"imap": "127.0.0.1:2143", "imaps": "127.0.0.1:2993", "pop3": "127.0.0.1:2110",
		"pop3s": "127.0.0.1:2995", "http": "127.0.0.1:8080",
	}
	ls := c.Listeners()
	if len(ls) != len(want) {
		t.Fatalf("Local().Listeners() has %d listeners; want %d", len(ls), len(want))
	}
	for _, l := range ls {
		if want[l.Name] != l.Addr {
			t.Errorf("local listener %s = %q; want %q", l.Name, l.Addr, want[l.Name])
		}
		if l.Name == "http" && l.TLS {
			t.Errorf("local http listener has TLS; want plain HTTP on loopback")
		}
	}
	if c, _ := config.Local(""); c.DataDir != config.DefaultDataDir {
		t.Errorf("Local(\"\").DataDir = %q; want %q", c.DataDir, config.DefaultDataDir)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := config.Parse("tidings.toml", []byte(`hostname = "mx.example.test"`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"hostname", c.Hostname, "mx.example.test"},
		{"data_dir", c.DataDir, "./tidings-data"},
		{"driver", c.Driver(), "sqlite"},
		{"blobs.store", c.Blobs.Store, "filesystem"},
		{"tls.min_version", c.TLS.MinVersion, "1.2"},
		{"listen.smtp", c.Listen.SMTP, ":25"},
		{"listen.submission", c.Listen.Submission, ":587"},
		{"listen.submissions", c.Listen.Submissions, ":465"},
		{"listen.imap", c.Listen.IMAP, ":143"},
		{"listen.imaps", c.Listen.IMAPS, ":993"},
		{"listen.pop3", c.Listen.POP3, ":110"},
		{"listen.pop3s", c.Listen.POP3S, ":995"},
		{"listen.http", c.Listen.HTTP, ":443"},
		{"auth.subaddress_separator", c.Auth.SubaddressSeparator, "+"},
		{"auth.fail_window", c.Auth.FailWindow, 15 * time.Minute},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"local", c.Local, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("Parse(defaults).%s = %v; want %v", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "db-url")
	if err := os.WriteFile(secret, []byte("postgres://tidings:s3cret@db.example.test/tidings\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("tidings.toml", []byte(`
hostname = "mail.example.test"
data_dir = "/var/lib/tidings"
database_file = "`+secret+`"
allow_unsafe_durability = true

[blobs]
store = "filesystem"
dir = "/srv/blobs"

[tls]
min_version = "1.3"
[[tls.certificate]]
cert_file = "/etc/a.pem"
key_file = "/etc/a.key"
[[tls.certificate]]
cert_file = "/etc/b.pem"
key_file = "/etc/b.key"

[listen]
smtp = "192.0.2.1:25"
imap = ""
http = "[::1]:8443"
[listen.proxy_protocol]
smtp = ["10.0.0.0/8", "192.0.2.7"]

[auth]
subaddress_separator = "-"
fail_window = "1h"
max_failures_ip = 5
max_failures_account = 3

[log]
level = "debug"
format = "json"
`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if c.Database != "postgres://tidings:s3cret@db.example.test/tidings" || c.Driver() != "postgres" {
		t.Errorf("database_file: Database = %q, Driver = %q; want the URL from the file, postgres", c.Database, c.Driver())
	}
	if strings.Contains(c.RedactedDatabase(), "s3cret") {
		t.Errorf("RedactedDatabase() = %q; want the password hidden", c.RedactedDatabase())
	}
	if c.Blobs.Dir != "/srv/blobs" || !c.AllowUnsafeDurability || c.TLS.MinVersion != "1.3" || len(c.TLS.Certificates) != 2 {
		t.Errorf("Parse = %+v; want the file's values", c)
	}
	if c.Auth.FailWindow != time.Hour || c.Auth.MaxFailuresIP != 5 || c.Auth.SubaddressSeparator != "-" {
		t.Errorf("Parse auth = %+v; want the file's values", c.Auth)
	}
	byName := map[string]config.Listener{}
	for _, l := range c.Listeners() {
		byName[l.Name] = l
	}
	if _, ok := byName["imap"]; ok {
		t.Errorf("listen.imap = \"\" still listens; want it disabled")
	}
	if l := byName["smtp"]; l.Addr != "192.0.2.1:25" || len(l.Proxy) != 2 || l.Proxy[1].String() != "192.0.2.7/32" || l.TLS {
		t.Errorf("smtp listener = %+v; want 192.0.2.1:25 with two trusted networks, no implicit TLS", l)
	}
	if l := byName["imaps"]; l.Addr != ":993" || !l.TLS {
		t.Errorf("imaps listener = %+v; want the default :993 with implicit TLS", l)
	}
	if l := byName["http"]; !l.TLS {
		t.Errorf("configured http listener = %+v; want HTTPS", l)
	}
}

func TestParseSMTP(t *testing.T) {
	c, err := config.Parse("tidings.toml", []byte("[smtp]\nmax_message_size = \"10M\"\nsmarthost = \"relay.example:587\"\ndmarc_reject = false\ngive_up = \"48h\"\noutbound_port = 2525"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SMTP.MaxMessageBytes(); got != 10<<20 {
		t.Errorf("MaxMessageBytes() = %d; want %d", got, 10<<20)
	}
	if c.SMTP.Smarthost != "relay.example:587" || c.SMTP.DMARCReject == nil || *c.SMTP.DMARCReject || c.SMTP.GiveUp != 48*time.Hour {
		t.Errorf("SMTP = %+v; want smarthost, dmarc_reject false, give_up 48h", c.SMTP)
	}
	if c.SMTP.OutboundPort != 2525 {
		t.Errorf("SMTP.OutboundPort = %d; want 2525", c.SMTP.OutboundPort)
	}
}

func TestParseBlobsDefaultPostgres(t *testing.T) {
	c, err := config.Parse("t.toml", []byte(`database = "postgres://u@h/db"`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if c.Blobs.Store != config.BlobsDatabase {
		t.Errorf("Parse(postgres).Blobs.Store = %q; want %q", c.Blobs.Store, config.BlobsDatabase)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want string // substring of the one-line error
	}{
		{"unknown top key", `foo = 1`, `config: unknown key "foo" in tidings.toml`},
		{"unknown nested key", "[blobs]\nbar = 1", `config: unknown key "blobs.bar" in tidings.toml`},
		{"unknown table", "[foo]\nbar = 1", `unknown key "foo`},
		{"unknown proxy listener", "[listen.proxy_protocol]\nftp = []", `unknown key "listen.proxy_protocol.ftp"`},
		{"unknown cert key", "[[tls.certificate]]\ncert = \"x\"", `unknown key "tls.certificate.cert"`},
		{"syntax", `hostname = `, `config: tidings.toml: line 1`},
		{"type", `allow_unsafe_durability = "yes"`, `allow_unsafe_durability`},
		{"database", `database = "mysql://x"`, `tidings.toml: database: `},
		{"both database keys", "database = \"postgres://x\"\ndatabase_file = \"/nonexistent\"", `database: set either`},
		{"database file missing", `database_file = "/nonexistent/x"`, `database_file: `},
		{"blobs.store", "[blobs]\nstore = \"s3\"", `blobs.store: "s3"`},
		{"min_version", "[tls]\nmin_version = \"1.1\"", `tls.min_version: "1.1"`},
		{"half certificate", "[[tls.certificate]]\ncert_file = \"a\"", `tls.certificate[0]: needs both`},
		{"listen address", "[listen]\nsmtp = \"25\"", `listen.smtp: "25"`},
		{"listen host", "[listen]\nsmtp = \"mail.example:25\"", `listen.smtp: "mail.example:25": host`},
		{"listen port", "[listen]\nimap = \":99999\"", `listen.imap: ":99999": bad port`},
		{"listen twice", "[listen]\nimap = \":143\"\npop3 = \":143\"", `listen.pop3: ":143" is also listen.imap`},
		{"proxy network", "[listen.proxy_protocol]\nimap = [\"ten\"]", `listen.proxy_protocol.imap: "ten"`},
		{"separator", "[auth]\nsubaddress_separator = \"@\"", `auth.subaddress_separator`},
		{"fail window", "[auth]\nfail_window = \"0s\"", `auth.fail_window`},
		{"fail window syntax", "[auth]\nfail_window = \"soon\"", `fail_window`},
		{"max failures", "[auth]\nmax_failures_ip = 0", `auth.max_failures_ip`},
		{"hash workers", "[auth]\nhash_workers = -1", `auth.hash_workers`},
		{"log level", "[log]\nlevel = \"loud\"", `log.level: "loud"`},
		{"log format", "[log]\nformat = \"xml\"", `log.format: "xml"`},
		{"hostname", `hostname = "a b"`, `hostname: "a b"`},
		{"trash retention", `trash_retention = "-1h"`, `trash_retention`},
		{"message size", "[smtp]\nmax_message_size = \"huge\"", `smtp.max_message_size`},
		{"smarthost tls", "[smtp]\nsmarthost_tls = \"maybe\"", `smtp.smarthost_tls: want starttls`},
		{"smarthost password twice", "[smtp]\nsmarthost_password = \"a\"\nsmarthost_password_file = \"/x\"", `smtp.smarthost_password: set either`},
		{"negative limit", "[smtp]\nmessages_per_hour = -1", `smtp: limits`},
		{"negative outbound port", "[smtp]\noutbound_port = -1", `smtp.outbound_port: want a port`},
		{"outbound port too big", "[smtp]\noutbound_port = 65536", `smtp.outbound_port: want a port`},
		{"unknown smtp key", "[smtp]\nrelayhost = \"x\"", `unknown key "smtp.relayhost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("tidings.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("Parse(%q) = nil; want an error containing %q", tt.toml, tt.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "config: ") {
				t.Errorf("Parse(%q) = %q; want one line starting config: and containing %q", tt.toml, msg, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Load(missing) = %v; want a config: error", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"1048576", 1 << 20, false},
		{"500M", 500 << 20, false},
		{"2G", 2 << 30, false},
		{"2g", 2 << 30, false},
		{"1.5GB", 3 << 29, false},
		{"64KiB", 64 << 10, false},
		{"1T", 1 << 40, false},
		{"", 0, true},
		{"G", 0, true},
		{"-1M", 0, true},
		{"lots", 0, true},
		{"1e30T", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := config.ParseSize(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1536, "1.5 KB"}, {2 << 30, "2.0 GB"},
	}
	for _, tt := range tests {
		if got := config.FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestSelfSigned(t *testing.T) {
	c, err := config.Local(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c.Hostname = "mail.example.test"
	certs, created, err := config.LoadCertificates(c)
	if err != nil || !created {
		t.Fatalf("LoadCertificates() = %v, created %v; want a new self-signed certificate", err, created)
	}
	key := filepath.Join(c.TLSDir(), config.SelfSignedKey)
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("self-signed key %s: %v, mode %v; want 0600", key, err, fi.Mode().Perm())
	}
	leaf := certs.Certificates()[0].Leaf
	if leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("self-signed key algorithm = %v; want ECDSA", leaf.PublicKeyAlgorithm)
	}
	for _, name := range []string{"localhost", "mail.example.test", "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("self-signed VerifyHostname(%q) = %v; want nil", name, err)
		}
	}
	// Made once: a second load keeps the same certificate.
	again, created, err := config.LoadCertificates(c)
	if err != nil || created {
		t.Fatalf("second LoadCertificates() = %v, created %v; want the existing one", err, created)
	}
	if !again.Certificates()[0].Leaf.Equal(leaf) {
		t.Errorf("second LoadCertificates() made a new certificate; want the one on disk")
	}

	// A TLS handshake with it works and honours min_version.
	cfg := certs.TLSConfig()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("tls.Dial(self-signed) = %v", err)
	}
	conn.Close()
}

func TestCertificatesBySNI(t *testing.T) {
	dir := t.TempDir()
	a, ak, _, err := config.SelfSigned(filepath.Join(dir, "a"), "a.example.test")
	if err != nil {
		t.Fatal(err)
	}
	b, bk, _, err := config.SelfSigned(filepath.Join(dir, "b"), "b.example.test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Local(dir)
	if err != nil {
		t.Fatal(err)
	}
	c.TLS.Certificates = []config.Certificate{{CertFile: a, KeyFile: ak}, {CertFile: b, KeyFile: bk}}
	certs, created, err := config.LoadCertificates(c)
	if err != nil || created {
		t.Fatalf("LoadCertificates() = %v, created %v", err, created)
	}
	cfg := certs.TLSConfig()
	tests := []struct{ sni, want string }{
		{"b.example.test", "b.example.test"},
		{"a.example.test", "a.example.test"},
		{"other.example.test", "a.example.test"},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			hello := &tls.ClientHelloInfo{ServerName: tt.sni, SupportedVersions: []uint16{tls.VersionTLS13},
				SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}, SupportedCurves: []tls.CurveID{tls.CurveP256}}
			got, err := cfg.GetCertificate(hello)
			if err != nil {
				t.Fatal(err)
			}
			if got.Leaf.Subject.CommonName != tt.want {
				t.Errorf("GetCertificate(%q) = %q; want %q", tt.sni, got.Leaf.Subject.CommonName, tt.want)
			}
		})
	}
	// A broken pair is reported naming the file, and Reload keeps the old set.
	if err := os.WriteFile(b, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := certs.Reload(); err == nil || !strings.Contains(err.Error(), b) {
		t.Errorf("Reload(broken) = %v; want an error naming %s", err, b)
	}
	if n := len(certs.Certificates()); n != 2 {
		t.Errorf("after failed Reload, %d certificates; want the previous 2", n)
	}
}

func TestSetDataDir(t *testing.T) {
	tests := []struct {
		name, toml, wantBlobs string
	}{
		{"derived blobs dir follows", `hostname = "h"`, "/new/blobs"},
		{"explicit blobs dir stays", "[blobs]\ndir = \"/srv/blobs\"", "/srv/blobs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("t.toml", []byte(tt.toml))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.SetDataDir("/new"); err != nil {
				t.Fatalf("SetDataDir = %v", err)
			}
			if c.DataDir != "/new" || c.Blobs.Dir != tt.wantBlobs || c.SQLitePath() != "/new/tidings.db" {
				t.Errorf("SetDataDir(/new) = data %q, blobs %q, db %q; want /new, %q, /new/tidings.db", c.DataDir, c.Blobs.Dir, c.SQLitePath(), tt.wantBlobs)
			}
		})
	}
}

// TestExampleConfig keeps deploy/tidings.example.toml true: it parses, its
// values are the defaults, and every commented-out key is a real key.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile("../deploy/tidings.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("tidings.example.toml", b)
	if err != nil {
		t.Fatalf("Parse(example) = %v", err)
	}
	def, err := config.Parse("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Listeners(), def.Listeners(); len(got) != len(want) {
		t.Errorf("example listeners = %v; want the defaults %v", got, want)
	}
	if c.Auth != def.Auth || c.Log != def.Log || c.TLS.MinVersion != def.TLS.MinVersion || c.Blobs != def.Blobs || c.DataDir != def.DataDir {
		t.Errorf("example = %+v; want the defaults %+v", c, def)
	}
	// Uncomment every "#key = value" and "#[table]" line (database_file
	// would need the file and conflicts with database).
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "# ") && l != "#" && !strings.HasPrefix(l, "#database_file") {
			l = strings.TrimPrefix(l, "#")
		}
		lines = append(lines, l)
	}
	if _, err := config.Parse("uncommented.toml", []byte(strings.Join(lines, "\n"))); err != nil {
		t.Errorf("Parse(example with every key uncommented) = %v", err)
	}
}
