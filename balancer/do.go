package balancer

import (
	"context"
	"errors"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/bridge"
)

// errNilFunc is returned by Do when its function is nil.
var errNilFunc = errors.New("balancer: Do called with a nil function")

// Do picks a backend, checks out a conn to it, calls fn with it and ends the
// checkout by itself, as connpool.Pool.Do does: a nil error or one marked
// with connpool.Clean or connpool.CleanFailure returns the conn to the
// pool, any other error releases it, and a panic releases it and goes on.
// fn must not keep c, or call its Close or Release, after it returns.
//
// Retries follow connpool.Pool.Do's rules (see connpool.DoPolicy): a
// request that failed with a connection error on a reused conn is sent
// again on a fresh conn to the same backend, up to connpool.WithRetries
// times. In addition, an idempotent request (connpool.Idempotent) that
// failed with a connection error on a fresh conn, before any byte of the
// response, is sent once to another backend, as Envoy's retry_on
// "reset,connect-failure" does: a backend that died mid-request can fail
// fresh conns too. connpool.WithRetries(0) turns both kinds off. A failed dial moves to another backend as Get does.
// Every retry, of either kind, is paid from the retry budget of the address
// that failed (connpool.WithRetryBudget).
//
// Outcomes go to the balancer once per backend tried: success; for an
// error marked with connpool.CleanFailure, or a connection or other error
// of the backend, failure; for a request the caller's context ended, or a
// stale reused conn whose retry followed on the same backend, neither (the
// retry's outcome counts). An error marked with connpool.Clean counts as a
// success: the backend answered.
//
// The error Do returns is a *connpool.DoError, which tells how many
// attempts were made (a checkout that failed before fn ran counts as one)
// and wraps the last error.
func (bp *Pool) Do(ctx context.Context, fn func(c *Conn) error, opts ...connpool.DoOption) error {
	if fn == nil {
		return &connpool.DoError{Err: errNilFunc}
	}
	dp := connpool.NewDoPolicy(opts...)
	var failed []string
	c, err := bp.get(ctx, nil)
	retries, movedOn := 0, false
	for attempt := 1; ; attempt++ {
		if err != nil {
			return &connpool.DoError{Attempts: attempt, Err: err}
		}
		addr := c.Address()
		err = c.run(fn)
		if err == nil {
			c.end(false, nil)
			return nil
		}
		var clean *connpool.CleanError
		if errors.As(err, &clean) {
			c.end(false, cleanOutcome(clean))
			return &connpool.DoError{Address: addr, Attempts: attempt, Err: err}
		}
		// Which retry applies, if any, is decided first, so that the
		// budget is asked once.
		same := retries < dp.Retries && dp.CanRetry(ctx, c.Conn, err)
		elsewhere := !same && !movedOn && dp.Retries > 0 && dp.CanRetryElsewhere(ctx, c.Conn, err)
		switch {
		case (same || elsewhere) && !bp.p.SpendRetry(addr):
			c.end(true, outcome(ctx, err))
		case same:
			retries++
			c, err = bp.retrySame(ctx, c, err, &failed)
			continue
		case elsewhere:
			movedOn = true
			c.end(true, err)
			failed = append(failed, addr)
			bp.traceRetry(addr, err, false, nil)
			c, err = bp.get(ctx, failed)
			continue
		default:
			c.end(true, outcome(ctx, err))
		}
		return &connpool.DoError{Address: addr, Attempts: attempt, Err: err}
	}
}

// retrySame releases c, a reused conn that turned out stale, without
// reporting to the balancer, and checks out a fresh conn to the same
// address for the same pick, whose outcome then counts. If that dial fails,
// it is reported, and the request moves to another backend as Get does.
// cause is the error of the attempt on c, for the trace.
func (bp *Pool) retrySame(ctx context.Context, c *Conn, cause error, failed *[]string) (*Conn, error) {
	addr, done := c.Address(), c.done
	if !c.handOver() { // fn ended the conn itself, and its pick with it
		bp.traceRetry(addr, cause, false, nil)
		return bp.get(ctx, *failed)
	}
	bp.traceRetry(addr, cause, true, done)
	// In shared mode the failed value is out of rotation already, and
	// the retry takes a share of another one, or dials.
	nc, err := bp.checkout(ctx, addr, done, !bridge.Shared(bp.p))
	if err == nil {
		return &Conn{Conn: nc.(*connpool.Conn), done: done, bp: bp}, nil
	}
	if !backendFault(err) {
		done(ErrPickNotUsed)
		return nil, err
	}
	done(err)
	*failed = append(*failed, addr)
	if !bp.p.SpendRetry(addr) {
		return nil, err
	}
	bp.traceRetry(addr, err, false, nil)
	return bp.get(ctx, *failed)
}

// cleanOutcome is the balancer's outcome of a request whose error was
// marked clean: a success of the backend, unless marked as its failure.
func cleanOutcome(clean *connpool.CleanError) error {
	if clean.BackendFailure {
		return clean
	}
	return nil
}

// outcome is the balancer's outcome of a request that failed with err: a
// failure of the backend, unless the caller's context ended.
func outcome(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return ErrPickNotUsed
	}
	return err
}

// run calls fn with c. If fn panics or calls runtime.Goexit, the conn is
// released and the pick reported as unused before the panic goes on.
func (c *Conn) run(fn func(*Conn) error) error {
	returned := false
	defer func() {
		if !returned {
			c.end(true, ErrPickNotUsed)
		}
	}()
	err := fn(c)
	returned = true
	return err
}

// end ends the checkout, releasing the conn or returning it to the pool,
// and reports outcome to the balancer, unless the conn was ended already.
func (c *Conn) end(release bool, outcome error) {
	if release {
		_ = c.Conn.Release()
		if c.ended.CompareAndSwap(false, true) {
			c.done(outcome)
			c.bp.retireIfGone(c.Address())
		}
		return
	}
	_ = c.CloseWithError(outcome)
}

// handOver releases the conn without reporting to the balancer, so that
// its pick goes on with another conn, and reports whether the pick was
// still open (fn did not end the conn itself).
func (c *Conn) handOver() bool {
	_ = c.Conn.Release()
	c.bp.retireIfGone(c.Address())
	return c.ended.CompareAndSwap(false, true)
}
