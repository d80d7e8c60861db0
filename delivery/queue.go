package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"tidings/auth"
	"tidings/message"
	"tidings/storage"
)

// Runner defaults.
const (
	DefaultGiveUp         = 5 * 24 * time.Hour
	DefaultDelayWarning   = 4 * time.Hour
	DefaultConcurrency    = 20
	DefaultPerDestination = 4
	DefaultLease          = 30 * time.Minute
	DefaultPoll           = 30 * time.Second
)

// DefaultBackoff is the wait after the 1st, 2nd, ... failed attempt; the
// last value repeats until the give-up time.
var defaultBackoff = []time.Duration{
	time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 4 * time.Hour,
}

// RunnerConfig tunes a Runner. The zero value of each field gets its
// default.
type RunnerConfig struct {
	// Hostname is our name in EHLO, the DSN's Reporting-MTA and the
	// lease holder id.
	Hostname string
	// Smarthost, "host:port", sends everything through one relay instead
	// of the recipients' MX hosts.
	Smarthost                        string
	SmarthostUser, SmarthostPassword string
	// SmarthostTLS is "starttls" (required, certificate verified), "tls"
	// (implicit TLS) or "none"; default "starttls".
	SmarthostTLS string
	// TLSConfig is the base TLS configuration (RootCAs for a smarthost
	// with a private CA); nil = system roots.
	TLSConfig *tls.Config
	// Resolver looks up MX and address records. Required unless every
	// destination is an IP literal smarthost; tests point it at an
	// in-process DNS server.
	Resolver Resolver
	// Port is the SMTP port of MX hosts (25; tests override).
	Port int
	// GiveUp bounds how long a message is retried (default 5 days),
	// counted from its arrival; the message's own Expires wins when set.
	GiveUp time.Duration
	// DelayWarning is when a still-deferred recipient gets a delay DSN
	// (default 4h; RFC 3461 NOTIFY=DELAY or no NOTIFY).
	DelayWarning time.Duration
	// Backoff is the wait after each failed attempt (last value repeats).
	Backoff []time.Duration
	// Concurrency bounds messages in flight; PerDestination bounds
	// connections to one destination.
	Concurrency    int
	PerDestination int
	// Lease is how long a claimed message stays ours; it must exceed the
	// longest delivery attempt.
	Lease time.Duration
	// Poll is how often the queue is read when nobody Kicks.
	Poll time.Duration
	// DSNFrom is the From: of our DSNs (default postmaster@Hostname).
	DSNFrom string
	// ConnectTimeout, CommandTimeout and DataTimeout bound the network
	// steps (defaults 30s, 5m, 10m: RFC 5321 §4.5.3.2).
	ConnectTimeout, CommandTimeout, DataTimeout time.Duration
}

// RunnerDeps are the parts a Runner works with. Dir and Signer may be nil
// (DSNs then always go out by SMTP, unsigned).
type RunnerDeps struct {
	Store  storage.Store
	Dir    *auth.Directory
	Signer *Signer
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests move it forward to reach
	// the delay-warning and give-up times without waiting.
	Now func() time.Time
}

// Runner delivers the outbound queue: it claims due messages by lease,
// delivers each outside any store transaction, and records the outcome
// (DESIGN.md §Scale-out). Any number of Runners, on any number of nodes,
// share one queue without sending a message twice.
type Runner struct {
	cfg    RunnerConfig
	deps   RunnerDeps
	log    *slog.Logger
	now    func() time.Time
	holder string
	kick   chan struct{}

	mu       sync.Mutex
	inflight map[string]int // destination → connections
	cond     *sync.Cond
}

// NewRunner returns a Runner; Run starts it.
func NewRunner(cfg RunnerConfig, deps RunnerDeps) *Runner {
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
		if cfg.Hostname == "" {
			cfg.Hostname = "localhost"
		}
	}
	if cfg.SmarthostTLS == "" {
		cfg.SmarthostTLS = "starttls"
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.GiveUp <= 0 {
		cfg.GiveUp = DefaultGiveUp
	}
	if cfg.DelayWarning <= 0 {
		cfg.DelayWarning = DefaultDelayWarning
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = defaultBackoff
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PerDestination <= 0 {
		cfg.PerDestination = DefaultPerDestination
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.DSNFrom == "" {
		cfg.DSNFrom = "postmaster@" + cfg.Hostname
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 5 * time.Minute
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = 10 * time.Minute
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	r := &Runner{
		cfg: cfg, deps: deps, log: log.With("proto", "queue"), now: now,
		holder:   cfg.Hostname + "/" + randomToken()[:12],
		kick:     make(chan struct{}, 1),
		inflight: map[string]int{},
	}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// Kick wakes the runner: something was queued.
func (r *Runner) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run claims and delivers until ctx ends, then waits for the deliveries
// in flight (they stop at once: their connections follow ctx).
func (r *Runner) Run(ctx context.Context) error {
	slots := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		free := r.cfg.Concurrency - len(slots)
		var msgs []storage.QueueMessage
		if free > 0 {
			var err error
			msgs, err = r.deps.Store.Claim(ctx, r.holder, r.now(), free, r.cfg.Lease)
			if err != nil && ctx.Err() == nil {
				r.log.Error("queue claim failed", "err", err)
			}
		}
		for _, m := range msgs {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				defer func() {
					if p := recover(); p != nil {
						r.log.Error("queue delivery panicked", "id", m.ID, "panic", p)
					}
				}()
				r.process(ctx, m)
			})
		}
		if len(msgs) > 0 && len(msgs) == free {
			// Probably more due: claim again as soon as a slot frees.
			select {
			case <-ctx.Done():
				return nil
			case slots <- struct{}{}:
				<-slots
			}
			continue
		}
		timer.Reset(r.cfg.Poll)
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-timer.C:
		}
	}
}

// drain claims and delivers every due message, waiting for each batch,
// until nothing is due (tests; a deterministic pass of what Run does).
func (r *Runner) drain(ctx context.Context) (int, error) {
	n := 0
	for {
		msgs, err := r.deps.Store.Claim(ctx, r.holder, r.now(), r.cfg.Concurrency, r.cfg.Lease)
		if err != nil || len(msgs) == 0 {
			return n, err
		}
		var wg sync.WaitGroup
		for _, m := range msgs {
			wg.Go(func() { r.process(ctx, m) })
		}
		wg.Wait()
		n += len(msgs)
	}
}

// acquire waits for a connection slot to dest (PerDestination).
func (r *Runner) acquire(ctx context.Context, dest string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.inflight[dest] >= r.cfg.PerDestination {
		if ctx.Err() != nil {
			return false
		}
		r.cond.Wait()
	}
	r.inflight[dest]++
	return true
}

func (r *Runner) release(dest string) {
	r.mu.Lock()
	r.inflight[dest]--
	if r.inflight[dest] <= 0 {
		delete(r.inflight, dest)
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

// process makes one attempt for a claimed message and records it.
func (r *Runner) process(ctx context.Context, m storage.QueueMessage) {
	now := r.now()
	expires := m.Expires
	if expires.IsZero() || m.Created.Add(r.cfg.GiveUp).Before(expires) {
		expires = m.Created.Add(r.cfg.GiveUp)
	}
	var todo []storage.QueueRecipient
	results := make(map[int64]rcptResult)
	for _, rc := range m.Recipients {
		switch {
		case rc.Status == storage.RecipientFailed:
			// Failed earlier, DSN still due.
			results[rc.ID] = rcptResult{status: storage.RecipientFailed, reply: rc.LastReply}
		case !now.Before(expires):
			reply := "4.4.7 delivery time expired"
			if rc.LastReply != "" {
				reply += "; last reply: " + rc.LastReply
			}
			results[rc.ID] = rcptResult{status: storage.RecipientFailed, reply: reply}
		default:
			todo = append(todo, rc)
		}
	}
	if len(todo) > 0 {
		// The attempt ends well before the lease does, so the outcome is
		// recorded while the message is still ours and no other node can
		// claim it meanwhile and send it twice.
		actx, cancel := context.WithTimeout(ctx, r.cfg.Lease*4/5)
		defer cancel()
		var rs []rcptResult
		if m.Kind == storage.QueueLocal {
			rs = r.attemptLocal(actx, m, todo)
		} else {
			rs = r.attemptRemoteMsg(actx, m, todo)
		}
		if rs == nil && ctx.Err() == nil {
			rs = make([]rcptResult, len(todo))
			for i := range rs {
				rs[i] = rcptResult{status: storage.RecipientPending, reply: "451 4.4.2 delivery attempt timed out"}
			}
		}
		if rs == nil {
			// Shutting down mid-attempt: release the lease so another node
			// (or the next start) retries at once rather than after it expires.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.deps.Store.Record(rctx, m.ID, r.holder, nil, time.Time{}); err != nil && !errors.Is(err, storage.ErrNotFound) {
				r.log.Warn("queue lease not released", "id", m.ID, "err", err)
			}
			return
		}
		for i, rc := range todo {
			results[rc.ID] = rs[i]
		}
	}
	r.finish(ctx, m, expires, results)
}

func (r *Runner) backoff(attempts int) time.Duration {
	if attempts >= len(r.cfg.Backoff) {
		return r.cfg.Backoff[len(r.cfg.Backoff)-1]
	}
	return r.cfg.Backoff[attempts]
}

// attemptRemoteMsg opens the blob and runs one SMTP attempt, holding a
// per-destination connection slot.
func (r *Runner) attemptRemoteMsg(ctx context.Context, m storage.QueueMessage, todo []storage.QueueRecipient) []rcptResult {
	dest := m.Destination
	if r.cfg.Smarthost != "" {
		dest = r.cfg.Smarthost
	}
	if !r.acquire(ctx, dest) {
		return nil
	}
	defer r.release(dest)
	blob, err := r.deps.Store.OpenQueueBlob(ctx, m.ID)
	if err != nil {
		out := make([]rcptResult, len(todo))
		for i := range out {
			out[i] = rcptResult{status: storage.RecipientPending, reply: "451 4.3.0 queued message unreadable: " + err.Error()}
		}
		return out
	}
	defer blob.Close()
	// Whatever happened (even a shutdown mid-session), the results are
	// complete: recipients the peer accepted are delivered, the others
	// deferred, and recording that avoids sending them twice.
	return r.attempt(ctx, m, todo, blob, blob.Size())
}

// attemptLocal retries a QueueLocal message: each pending recipient is
// delivered into its mailbox again (DESIGN.md §Mail flow).
func (r *Runner) attemptLocal(ctx context.Context, m storage.QueueMessage, todo []storage.QueueRecipient) []rcptResult {
	out := make([]rcptResult, len(todo))
	src := &queueSource{ctx: ctx, store: r.deps.Store, id: m.ID, hash: m.BlobHash, size: m.BlobSize}
	rd, err := src.Open()
	var a *storage.Analysis
	if err == nil {
		a, err = message.Analyze(rd, m.BlobSize, message.Options{})
		rd.Close()
	}
	if err != nil {
		for i := range out {
			out[i] = rcptResult{status: storage.RecipientPending, reply: "451 4.3.0 queued message unreadable: " + err.Error()}
		}
		return out
	}
	targets := make([]storage.DeliveryTarget, len(todo))
	for i, rc := range todo {
		ac := *a
		targets[i] = storage.DeliveryTarget{Owner: rc.Owner, Mailbox: rc.Mailbox, Message: storage.NewMessage{Prefix: rc.Prefix, Analysis: &ac}}
	}
	res, err := r.deps.Store.Deliver(ctx, src, targets)
	if err != nil {
		for i := range out {
			out[i] = rcptResult{status: storage.RecipientPending, reply: "451 4.3.0 store unavailable: " + err.Error()}
		}
		return out
	}
	for i, dr := range res {
		switch {
		case dr.Err == nil:
			out[i] = rcptResult{status: storage.RecipientDelivered, reply: "250 2.0.0 delivered to mailbox"}
		case errors.Is(dr.Err, storage.ErrOverQuota):
			out[i] = rcptResult{status: storage.RecipientPending, reply: "452 4.2.2 mailbox full"}
		case errors.Is(dr.Err, storage.ErrNotFound):
			out[i] = rcptResult{status: storage.RecipientPending, reply: "450 4.2.0 mailbox unavailable"}
		default:
			out[i] = rcptResult{status: storage.RecipientPending, reply: "451 4.3.0 " + dr.Err.Error()}
		}
	}
	return out
}

// queueSource is a queued blob as a storage.BlobSource (for Deliver).
type queueSource struct {
	ctx   context.Context
	store storage.Store
	id    string
	hash  string
	size  int64
}

func (q *queueSource) Hash() string { return q.hash }
func (q *queueSource) Size() int64  { return q.size }
func (q *queueSource) Open() (storage.ReaderAtCloser, error) {
	return q.store.OpenQueueBlob(q.ctx, q.id)
}

// finish sends the DSNs due, logs one line per recipient and records the
// outcome.
func (r *Runner) finish(ctx context.Context, m storage.QueueMessage, expires time.Time, results map[int64]rcptResult) {
	now := r.now()
	var failed, delayed []dsnRecipient
	var outcomes []storage.RecipientOutcome
	maxAttempts := 0
	pending := false
	for _, rc := range m.Recipients {
		res, ok := results[rc.ID]
		if !ok {
			continue
		}
		o := storage.RecipientOutcome{ID: rc.ID, Status: res.status, Reply: res.reply, DelayWarned: rc.DelayWarned}
		rc.LastAttempt = now
		switch res.status {
		case storage.RecipientDelivered:
			r.log.Info("delivered", "id", m.ID, "to", rc.Address, "relay", res.host, "reply", res.reply)
		case storage.RecipientFailed:
			if rc.Status != storage.RecipientFailed {
				r.log.Warn("bounced", "id", m.ID, "to", rc.Address, "relay", res.host, "reply", res.reply)
			}
			// Never a DSN for the null sender (bounces are not bounced) or
			// against the recipient's NOTIFY (RFC 3461 §4.1).
			if m.From == "" || !notifies(rc.Notify, "FAILURE") {
				o.DSNSent = true
			} else {
				failed = append(failed, dsnRecipient{r: rc, reply: res.reply, remoteMTA: res.host})
			}
		default:
			pending = true
			maxAttempts = max(maxAttempts, rc.Attempts+1)
			r.log.Info("deferred", "id", m.ID, "to", rc.Address, "relay", res.host, "reply", res.reply)
			if !rc.DelayWarned && m.From != "" && now.Sub(m.Created) >= r.cfg.DelayWarning && notifies(rc.Notify, "DELAY") {
				delayed = append(delayed, dsnRecipient{r: rc, reply: res.reply, remoteMTA: res.host})
			}
		}
		outcomes = append(outcomes, o)
	}
	next := time.Time{}
	if pending {
		next = now.Add(r.backoff(maxAttempts - 1))
		if next.After(expires) {
			next = expires // give up on time
		}
	}
	if len(failed) > 0 {
		if err := r.sendDSN(ctx, m, actionFailed, failed); err != nil {
			r.log.Error("dsn not queued", "id", m.ID, "err", err)
			if next.IsZero() {
				next = now.Add(r.backoff(0))
			}
		} else {
			mark(outcomes, failed, func(o *storage.RecipientOutcome) { o.DSNSent = true })
		}
	}
	if len(delayed) > 0 {
		if err := r.sendDSN(ctx, m, actionDelayed, delayed); err != nil {
			r.log.Error("delay warning not queued", "id", m.ID, "err", err)
		} else {
			mark(outcomes, delayed, func(o *storage.RecipientOutcome) { o.DelayWarned = true })
		}
	}
	// Record with a context that outlives a shutdown in progress: the
	// attempt happened and must not be repeated needlessly.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := r.deps.Store.Record(rctx, m.ID, r.holder, outcomes, next); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			r.log.Warn("queue lease lost before recording", "id", m.ID)
			return
		}
		r.log.Error("queue record failed", "id", m.ID, "err", err)
	}
}

func mark(outcomes []storage.RecipientOutcome, rs []dsnRecipient, fn func(*storage.RecipientOutcome)) {
	for _, d := range rs {
		for i := range outcomes {
			if outcomes[i].ID == d.r.ID {
				fn(&outcomes[i])
			}
		}
	}
}

// sendDSN builds a DSN to m's sender and hands it to the store: delivered
// locally when the sender is ours, otherwise queued for remote delivery,
// always from the null sender.
func (r *Runner) sendDSN(ctx context.Context, m storage.QueueMessage, action dsnAction, rcpts []dsnRecipient) error {
	blob, err := r.deps.Store.OpenQueueBlob(ctx, m.ID)
	if err != nil {
		return err
	}
	defer blob.Close()
	orig := io.MultiReader(bytes.NewReader(m.Prefix), io.NewSectionReader(blob, 0, blob.Size()))
	full, err := io.ReadAll(io.LimitReader(orig, maxReturned+1))
	if err != nil {
		return err
	}
	dsn := buildDSN(dsnInput{
		hostname: r.cfg.Hostname, from: r.cfg.DSNFrom, msg: m, action: action, rcpts: rcpts,
		original: bytes.NewReader(full), origSize: int64(len(full)), now: r.now(),
	})
	var prefix []byte
	if r.deps.Signer != nil {
		if _, dom, ok := splitAddr(r.cfg.DSNFrom); ok {
			sig, err := r.deps.Signer.Sign(ctx, dom, bytes.NewReader(dsn))
			if err != nil {
				r.log.Warn("dsn not signed", "id", m.ID, "err", err)
			}
			prefix = sig
		}
	}
	src := storage.BytesSource(append(prefix, dsn...))
	var sub storage.Submission
	var routes []auth.Route
	if r.deps.Dir != nil {
		res, err := r.deps.Dir.Resolve(ctx, m.From)
		switch {
		case err == nil:
			routes = res.Recipients
		case errors.Is(err, auth.ErrUnknownDomain):
		case errors.Is(err, auth.ErrUnknownRecipient) || errors.Is(err, auth.ErrBadAddress):
			r.log.Warn("dsn dropped: sender unknown here", "id", m.ID, "sender", m.From)
			return nil
		default:
			return err
		}
	}
	now := r.now()
	remote := func(addr string) {
		_, dom, _ := splitAddr(addr)
		if d, err := storage.DomainASCII(dom); err == nil {
			dom = d
		}
		sub.Queue = append(sub.Queue, storage.QueueMessage{
			Kind: storage.QueueRemote, From: "", Destination: dom,
			SMTPUTF8: !isASCII(addr), EightBit: true,
			Created: now, NextAttempt: now, Expires: now.Add(r.cfg.GiveUp),
			Recipients: []storage.QueueRecipient{{Address: addr, Notify: "NEVER"}},
		})
	}
	if len(routes) == 0 {
		remote(m.From)
	}
	var analysis *storage.Analysis
	for _, rt := range routes {
		switch {
		case rt.Account != nil:
			if analysis == nil {
				if analysis, err = message.Analyze(bytes.NewReader(src), int64(len(src)), message.Options{}); err != nil {
					return err
				}
			}
			ac := *analysis
			p := "Return-Path: <>\r\nDelivered-To: " + headerValue(rt.Account.Address) + "\r\n"
			sub.Targets = append(sub.Targets, storage.DeliveryTarget{Owner: rt.Account.ID, Message: storage.NewMessage{Prefix: []byte(p), Analysis: &ac}})
			sub.TargetAddresses = append(sub.TargetAddresses, rt.Account.Address)
		case rt.External != "":
			remote(rt.External)
		}
	}
	sub.LocalTemplate = storage.QueueMessage{From: "", Created: now, Expires: now.Add(r.cfg.GiveUp)}
	res, err := r.deps.Store.Submit(ctx, src, sub)
	if err != nil {
		return err
	}
	for i, tr := range res.Results {
		if tr.Err != nil {
			r.log.Warn("dsn not delivered", "id", m.ID, "to", sub.TargetAddresses[i], "err", tr.Err)
		}
	}
	r.log.Info("dsn queued", "id", m.ID, "action", string(action), "to", m.From, "dsn_ids", strings.Join(res.QueueIDs, ","))
	if len(sub.Queue) > 0 {
		r.Kick()
	}
	return nil
}
