package connpool

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"syscall"
)

// DoOption configures one call of [Pool.Do] or balancer.Pool.Do. It is a
// plain value, so that passing options allocates nothing.
type DoOption struct {
	kind    doOptionKind
	retries int
}

type doOptionKind uint8

const (
	doNothing doOptionKind = iota // the zero DoOption
	doIdempotent
	doRetries
)

// DoPolicy is the retry policy of one call of Do, made by [NewDoPolicy]
// from its options. balancer.Pool and retry loops of your own use it to
// apply the same rules as [Pool.Do].
type DoPolicy struct {
	// Idempotent is set by [Idempotent].
	Idempotent bool
	// Retries is the most retries of the request, set by [WithRetries];
	// 1 by default.
	Retries int
}

// Idempotent declares that the request may be sent twice without harm
// (a read, or a write of a fixed value, such as GET or SET, but not INCR or
// an append). Do may then retry it after it was sent on a reused conn, as
// long as no byte of the response was read; and balancer.Pool.Do may
// retry it on another backend after a fresh conn failed.
func Idempotent() DoOption { return DoOption{kind: doIdempotent} }

// WithRetries sets the most retries of a request on a fresh conn to the
// same address (default 1); balancer.Pool.Do may add one on another
// backend, unless n is 0. Values below 0 mean 0: no retry at all. Since
// only a failure on a reused conn is retried, and a retry runs on a fresh
// one, Pool.Do retries at most once whatever n is; a higher n counts in
// balancer.Pool.Do, where a request moved to another backend may meet a
// stale reused conn there.
func WithRetries(n int) DoOption { return DoOption{kind: doRetries, retries: max(n, 0)} }

// NewDoPolicy returns the policy opts make, starting from the defaults.
// The zero DoOption does nothing.
func NewDoPolicy(opts ...DoOption) DoPolicy {
	dp := DoPolicy{Retries: 1}
	for _, opt := range opts {
		switch opt.kind {
		case doIdempotent:
			dp.Idempotent = true
		case doRetries:
			dp.Retries = opt.retries
		}
	}
	return dp
}

// CanRetry reports whether a request that failed with err on c may be sent
// again on a fresh conn, by the rules net/http's transport applies to its
// own retries (shouldRetryRequest):
//   - c was reused: an idle conn may have been closed by the server in the
//     meantime, while a failure on a fresh conn says something about the
//     server;
//   - err is a connection error (see [IsConnError]) and ctx has not ended;
//   - nothing was sent on c, or the request is idempotent and no byte of
//     the response was read.
//
// A request is never retried once part of its response was read. CanRetry
// does not count retries or spend the budget: see Retries and
// [Pool.SpendRetry].
func (dp DoPolicy) CanRetry(ctx context.Context, c *Conn, err error) bool {
	return c.Reused() && dp.canResend(ctx, c, err)
}

// CanRetryElsewhere reports whether a request that failed with err on c,
// reused or not, may be sent again to another backend: the request is
// idempotent, err is a connection error, ctx has not ended and no byte of
// the response was read. A backend killed mid-run fails fresh conns too (the
// kernel accepts them on its dying listen socket and resets them), which no
// retry to the same address mends.
func (dp DoPolicy) CanRetryElsewhere(ctx context.Context, c *Conn, err error) bool {
	return dp.Idempotent && dp.canResend(ctx, c, err)
}

// canResend applies the rules that CanRetry and CanRetryElsewhere share.
func (dp DoPolicy) canResend(ctx context.Context, c *Conn, err error) bool {
	return IsConnError(err) && ctx.Err() == nil && !c.Received() &&
		(!c.Sent() || dp.Idempotent)
}

// IsConnError reports whether err means the connection broke: the peer
// closed it (io.EOF, io.ErrUnexpectedEOF) or reset it (ECONNRESET,
// ECONNABORTED), or a write found it closed (EPIPE). Timeouts, the
// caller's context, a conn the caller closed itself and errors marked with
// [Clean] are not connection errors.
func IsConnError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var clean *CleanError
	if errors.As(err, &clean) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE)
}

// CleanError is an error of the application protocol after which the conn
// is still clean, made by [Clean] or [CleanFailure]: Do returns the conn to
// the pool and does not retry.
type CleanError struct {
	Err error
	// BackendFailure tells balancer.Pool to count the request as a
	// failure of the backend (CleanFailure) rather than a success (Clean).
	BackendFailure bool
}

func (e *CleanError) Error() string { return e.Err.Error() }

func (e *CleanError) Unwrap() error { return e.Err }

// Clean marks err, returned by a Do function, as an error of the
// application protocol that left the conn clean, such as a Redis -ERR
// reply to a bad command: the conn goes back to the pool rather than being
// released, and balancer.Pool counts the request as a success of the
// backend, which answered. Clean(nil) is nil.
func Clean(err error) error {
	if err == nil {
		return nil
	}
	return &CleanError{Err: err}
}

// CleanFailure is like [Clean], but balancer.Pool counts the request as a
// failure of the backend, for replies that say the backend is unwell (a
// Redis -BUSY or -LOADING, an HTTP 503). CleanFailure(nil) is nil.
func CleanFailure(err error) error {
	if err == nil {
		return nil
	}
	return &CleanError{Err: err, BackendFailure: true}
}

// DoError is the error of a request that Do could not complete: Err is
// the error of its last attempt, from the function or from the checkout,
// and errors.Is and errors.As see through to it.
type DoError struct {
	// Address is the address of the last attempt.
	Address string
	// Attempts is how many times the request was tried: 1 plus its
	// retries.
	Attempts int
	Err      error
}

// Error names the package once: the prefix of the package's own errors,
// such as a DialError's, is not repeated after the address and attempts.
func (e *DoError) Error() string {
	s := "connpool: "
	if e.Address != "" {
		s += e.Address + ": "
	}
	if e.Attempts > 1 {
		s += strconv.Itoa(e.Attempts) + " attempts, last: "
	}
	return s + strings.TrimPrefix(e.Err.Error(), "connpool: ")
}

func (e *DoError) Unwrap() error { return e.Err }

// errNilFunc is returned by Do when its function is nil.
var errNilFunc = errors.New("connpool: Do called with a nil function")

// Do checks out a conn to address, calls fn with it and ends the checkout
// by itself, so that no code path can leak or misplace a conn:
//   - fn returns nil: the conn goes back to the pool;
//   - fn returns an error marked with [Clean] or [CleanFailure]: the conn
//     goes back to the pool, and the error is returned;
//   - fn returns any other error: the conn is released, since it may hold
//     half a request or an unread reply;
//   - fn panics: the conn is released and the panic goes on.
//
// fn must not keep c, or call its Close or Release (Do does that), after it
// returns.
//
// A request that failed with a connection error on a reused conn, which the
// server may have closed while it sat idle, is retried on a freshly dialed
// conn when [DoPolicy.CanRetry] allows it (see [Idempotent]), up to
// [WithRetries] times (1 by default) and within the retry budget (see
// [WithRetryBudget]). The error Do returns is a *[DoError], which tells how
// many attempts ran and wraps the last attempt's error. Do allocates
// nothing when fn succeeds.
func (p *Pool) Do(ctx context.Context, address string, fn func(c *Conn) error, opts ...DoOption) error {
	p.mustBeNew()
	if fn == nil {
		return &DoError{Address: address, Attempts: 0, Err: errNilFunc}
	}
	// The first attempt is [Pool.attempt] and [runChecked] written out,
	// so that a success costs two calls less and touches neither the
	// options nor the retry state.
	if err := ctx.Err(); err != nil {
		return &DoError{Address: address, Attempts: 1, Err: err}
	}
	c, err := p.checkout(ctx, address, false)
	if err != nil {
		return &DoError{Address: address, Attempts: 1, Err: err}
	}
	defer c.releaseIfHeld() // fn panicked or called runtime.Goexit
	if err = fn(c); err == nil {
		_ = c.Close()
		return nil
	}
	endChecked(c, err)
	return p.retry(ctx, address, fn, c, err, opts)
}

// retry decides, after attempt 1 on c failed with err, whether to try again
// and how often, and returns the outcome of the last attempt.
func (p *Pool) retry(ctx context.Context, address string, fn func(*Conn) error, c *Conn, err error, opts []DoOption) error {
	dp := NewDoPolicy(opts...)
	for attempt := 1; ; attempt++ {
		if c == nil || attempt > dp.Retries || !dp.CanRetry(ctx, c, err) || !p.SpendRetry(address) {
			return &DoError{Address: address, Attempts: attempt, Err: err}
		}
		if t := p.trace; t != nil && t.Retry != nil {
			t.Retry(address, err)
		}
		// A retry runs on a fresh conn; in shared mode, on a share of
		// another value: the failed one is out of rotation.
		if c, err = p.attempt(ctx, address, p.shares == 0, fn); err == nil {
			return nil
		}
	}
}

// attempt checks out a conn to address (fresh: a new dial, as New does) and
// runs fn on it. When the checkout fails, c is nil and err is its error.
func (p *Pool) attempt(ctx context.Context, address string, fresh bool, fn func(*Conn) error) (c *Conn, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c, err = p.checkout(ctx, address, fresh); err != nil {
		return nil, err
	}
	return c, runChecked(c, fn)
}

// runChecked calls fn with c and ends c's checkout as Do describes. A
// Close or Release error is not returned: the request's outcome is fn's.
func runChecked(c *Conn, fn func(*Conn) error) error {
	defer c.releaseIfHeld() // fn panicked or called runtime.Goexit
	err := fn(c)
	endChecked(c, err)
	return err
}

// endChecked ends c's checkout after fn returned err, as Do describes.
func endChecked(c *Conn, err error) {
	if err == nil || isClean(err) {
		_ = c.Close()
	} else {
		_ = c.Release()
	}
}

// isClean reports whether err was marked with Clean or CleanFailure.
func isClean(err error) bool {
	var clean *CleanError
	return errors.As(err, &clean)
}
