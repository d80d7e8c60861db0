package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"tidings/auth"
	"tidings/config"
	"tidings/delivery"
	"tidings/imapd"
	"tidings/pop3d"
	"tidings/smtpd"
	"tidings/storage"
)

// Background maintenance and shutdown timings.
const (
	sweepEvery   = time.Hour
	blobGrace    = time.Hour // DESIGN.md §Blobs: default grace period
	purgeEvery   = 24 * time.Hour
	tombstoneAge = 30 * 24 * time.Hour // README §Decisions
	shutdownWait = 10 * time.Second
)

func (c *cli) serve(ctx context.Context, args []string) error {
	fs, o := newFlags("serve")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(o)
	if err != nil {
		return err
	}
	log := cfg.Logger(c.stderr)
	if cfg.Local {
		log.Info("local mode: no --config given", "data_dir", cfg.DataDir)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}

	certs, created, err := config.LoadCertificates(cfg)
	if err != nil {
		return err
	}
	if created {
		log.Info("made a self-signed certificate", "dir", cfg.TLSDir(), "names", "localhost, 127.0.0.1, ::1, "+cfg.Hostname)
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := openStore(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	if d, err := st.Durability(ctx); err == nil {
		log.Info("store open", "driver", st.Driver(), "database", cfg.RedactedDatabase(), "blobs", cfg.Blobs.Store, "durable", d.Safe)
		if !d.Safe {
			log.Warn("durability settings are unsafe; acknowledged mail may be lost on a crash (allow_unsafe_durability = true)", "settings", fmt.Sprint(d.Settings))
		}
	}

	// Open every listener before serving any, so a port in use fails the
	// start instead of leaving a half-running server.
	type open struct {
		l  config.Listener
		ln net.Listener
	}
	var lns []open
	closeAll := func() {
		for _, x := range lns {
			x.ln.Close()
		}
	}
	for _, l := range cfg.Listeners() {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			closeAll()
			closeWithin(st, shutdownWait)
			return fmt.Errorf("listen.%s: %w", l.Name, err)
		}
		lns = append(lns, open{l, ln})
	}

	dir := auth.New(st, authConfig(cfg), log.With("component", "auth"))
	mail := newMailFlow(ctx, cfg, st, dir, log)
	var wg sync.WaitGroup
	running := &runningSet{m: map[string]int{}}
	var servers []named
	var pop *pop3d.Server  // one server for both POP3 listeners
	var imap *imapd.Server // and one for both IMAP listeners
	var mx, sub *smtpd.Server
	for _, x := range lns {
		var run func() error
		switch x.l.Name {
		case "smtp":
			if mx == nil {
				mx = mail.server(smtpd.MX, certs.TLSConfig())
				servers = append(servers, named{"smtp", mx})
			}
			ln := x.ln
			run = func() error { return mx.Serve(ln) }
		case "submission", "submissions":
			if sub == nil {
				sub = mail.server(smtpd.Submission, certs.TLSConfig())
				servers = append(servers, named{"submission", sub})
			}
			ln := x.ln
			run = func() error { return sub.Serve(ln) }
			if x.l.TLS {
				run = func() error { return sub.ServeTLS(ln) }
			}
		case "imap", "imaps":
			if imap == nil {
				imap = imapd.New(imapd.Config{Hostname: cfg.Hostname, TLS: certs.TLSConfig()},
					imapd.Deps{Store: st, Dir: dir, Logger: log.With("proto", "imap")})
				servers = append(servers, named{"imap", imap})
			}
			ln := x.ln
			run = func() error { return imap.Serve(ln) }
			if x.l.TLS {
				run = func() error { return imap.ServeTLS(ln) }
			}
		case "pop3", "pop3s":
			if pop == nil {
				pop = pop3d.New(pop3d.Config{Hostname: cfg.Hostname, TLS: certs.TLSConfig()},
					pop3d.Deps{Store: st, Dir: dir, Logger: log.With("proto", "pop3")})
				servers = append(servers, named{"pop3", pop})
			}
			ln := x.ln
			run = func() error { return pop.Serve(ln) }
			if x.l.TLS {
				run = func() error { return pop.ServeTLS(ln) }
			}
		default:
			// Front ends not written yet answer "not available yet".
			p := newPlaceholder(x.l.Name, cfg.Hostname, log)
			servers = append(servers, named{x.l.Name, p})
			var tc *tls.Config
			if x.l.TLS {
				tc = certs.TLSConfig()
			}
			ln := x.ln
			run = func() error { return p.Serve(ln, tc) }
		}
		log.Info("listening", "proto", x.l.Name, "addr", x.ln.Addr().String(), "tls", x.l.TLS, "proxy_protocol", len(x.l.Proxy) > 0)
		wg.Add(1)
		running.add(x.l.Name)
		go func() {
			defer wg.Done()
			defer running.done(x.l.Name)
			if err := run(); err != nil {
				log.Error("listener failed", "proto", x.l.Name, "err", err)
			}
		}()
	}

	maintCtx, stopMaint := context.WithCancel(context.Background())
	var maintWG sync.WaitGroup
	maintWG.Add(1)
	go func() {
		defer maintWG.Done()
		maintain(maintCtx, st, log, cfg.TrashRetention)
	}()

	// SIGHUP reloads the certificates (DESIGN.md §Configuration).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log.Info("tidings started", "hostname", cfg.Hostname, "version", versionString())
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			if err := certs.Reload(); err != nil {
				log.Error("certificate reload failed; keeping the old ones", "err", err)
			} else {
				log.Info("certificates reloaded")
			}
		}
	}

	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	// Front ends shut down in parallel, each told the same deadline; the
	// process stops within it even if one of them fails to return, so a
	// stuck connection can never keep SIGTERM from working.
	var swg sync.WaitGroup
	for _, p := range servers {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if err := p.Shutdown(sctx); err != nil {
				log.Warn("listener shutdown", "proto", p.name, "err", err)
			}
		}()
	}
	stopped := make(chan struct{})
	go func() { swg.Wait(); wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownWait + time.Second):
		log.Error("front ends did not stop in time; exiting anyway", "still_running", running.names())
	}
	mail.stop()
	stopMaint()
	maintWG.Wait()
	if err := closeWithin(st, shutdownWait); err != nil {
		log.Error("closing the store", "err", err)
	}
	log.Info("stopped")
	return nil
}

// runningSet names the listeners whose Serve has not returned, for the
// shutdown log.
type runningSet struct {
	mu sync.Mutex
	m  map[string]int
}

func (r *runningSet) add(name string)  { r.mu.Lock(); r.m[name]++; r.mu.Unlock() }
func (r *runningSet) done(name string) { r.mu.Lock(); r.m[name]--; r.mu.Unlock() }

func (r *runningSet) names() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n, c := range r.m {
		if c > 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// service is a running front end.
type service interface {
	Shutdown(ctx context.Context) error
}

// named is a front end with the name its log lines use.
type named struct {
	name string
	service
}

// purgeTrash empties old Trash and Junk entries of the accounts whose
// trashcan policy keeps deleted mail there (README §Decisions).
func purgeTrash(ctx context.Context, st storage.Store, log *slog.Logger, retention time.Duration) {
	accts, err := st.Accounts(ctx, "")
	if err != nil {
		log.Warn("trash purge failed", "err", err)
		return
	}
	cutoff := time.Now().Add(-retention)
	for _, a := range accts {
		if !a.Policy.Trashcan {
			continue
		}
		n, err := storage.PurgeTrash(ctx, st, a.ID, cutoff)
		if err != nil {
			log.Warn("trash purge failed", "account", a.Address, "err", err)
			continue
		}
		if n > 0 {
			log.Info("trash purge", "account", a.Address, "purged", n)
		}
	}
}

// maintain runs the periodic store jobs until ctx ends: the blob sweeper
// hourly and the tombstone purge daily. Failures are logged and retried at
// the next tick; they never stop the server.
func maintain(ctx context.Context, st storage.Store, log *slog.Logger, trashRetention time.Duration) {
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	purge := time.NewTicker(purgeEvery)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			n, err := st.SweepBlobs(ctx, blobGrace)
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				log.Warn("blob sweep failed", "err", err)
			case n > 0:
				log.Info("blob sweep", "deleted", n)
			}
		case <-purge.C:
			n, err := st.PurgeTombstones(ctx, tombstoneAge)
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				log.Warn("tombstone purge failed", "err", err)
			case n > 0:
				log.Info("tombstone purge", "purged", n)
			}
			if trashRetention > 0 {
				purgeTrash(ctx, st, log, trashRetention)
			}
		}
	}
}

// mailFlow is the delivery side shared by the SMTP front ends: routing and
// local delivery, DKIM signing, SRS, and the outbound queue runner.
type mailFlow struct {
	cfg      *config.Config
	st       storage.Store
	dir      *auth.Directory
	log      *slog.Logger
	resolver *net.Resolver
	local    *delivery.Local
	cancel   context.CancelFunc
	done     chan struct{}
}

// dnsServerEnv points every DNS lookup of the mail flow (SPF, DKIM,
// DMARC, MX) at one server, host:port. Tests set it so the real binary
// never asks the machine's resolver; unset, the system resolver is used.
const dnsServerEnv = "TIDINGS_DNS_SERVER"

func newMailFlow(ctx context.Context, cfg *config.Config, st storage.Store, dir *auth.Directory, log *slog.Logger) *mailFlow {
	m := &mailFlow{cfg: cfg, st: st, dir: dir, log: log, resolver: net.DefaultResolver, done: make(chan struct{})}
	addr := cfg.SMTP.DNSServer
	if env := os.Getenv(dnsServerEnv); env != "" {
		addr = env
	}
	if addr != "" {
		m.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		log.Info("dns lookups go to one server", "server", addr)
	}
	signer := delivery.NewSigner(st, log.With("component", "dkim"))
	runner := delivery.NewRunner(delivery.RunnerConfig{
		Hostname:          cfg.Hostname,
		Resolver:          m.resolver,
		Port:              cfg.SMTP.OutboundPort,
		Smarthost:         cfg.SMTP.Smarthost,
		SmarthostUser:     cfg.SMTP.SmarthostUser,
		SmarthostPassword: cfg.SMTP.SmarthostPassword,
		SmarthostTLS:      cfg.SMTP.SmarthostTLS,
		GiveUp:            cfg.SMTP.GiveUp,
		DelayWarning:      cfg.SMTP.DelayWarning,
	},
		delivery.RunnerDeps{Store: st, Dir: dir, Signer: signer, Logger: log.With("component", "queue")})
	deps := delivery.LocalDeps{Store: st, Dir: dir, Signer: signer, Kick: runner.Kick, Logger: log.With("component", "delivery")}
	secret, err := st.Secret(ctx, "srs", func() ([]byte, error) {
		b := make([]byte, 32)
		rand.Read(b)
		return b, nil
	})
	if err != nil {
		log.Warn("no srs secret; forwards keep their sender", "err", err)
	} else {
		deps.SRS = delivery.NewSRS(secret, cfg.Hostname)
	}
	m.local = delivery.NewLocal(delivery.LocalConfig{
		SubaddressSeparator: authConfig(cfg).SubaddressSeparator,
		Hostname:            cfg.Hostname,
	}, deps)
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		if err := runner.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("queue runner stopped", "err", err)
		}
	}()
	return m
}

// server builds one SMTP front end.
func (m *mailFlow) server(mode smtpd.Mode, tc *tls.Config) *smtpd.Server {
	c := m.cfg.SMTP
	return smtpd.New(smtpd.Config{
		Mode:              mode,
		Hostname:          m.cfg.Hostname,
		TLS:               tc,
		Resolver:          m.resolver,
		MaxMessageBytes:   c.MaxMessageBytes(),
		MaxRecipients:     c.MaxRecipients,
		IgnoreDMARCReject: c.DMARCReject != nil && !*c.DMARCReject,
		MessagesPerHour:   c.MessagesPerHour,
		RecipientsPerHour: c.RecipientsPerHour,
	}, smtpd.Deps{Store: m.st, Dir: m.dir, Local: m.local, Logger: m.log})
}

// stop ends the queue runner (after the front ends have stopped).
func (m *mailFlow) stop() {
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(shutdownWait):
		m.log.Warn("queue runner did not stop in time")
	}
}
