package clientpool

import (
	"io"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/bridge"
)

// An Option configures a [Pool] in [New]. Each means what the option of
// package connpool with the same name means, for values instead of conns.
// The zero Option does nothing.
type Option struct {
	opt connpool.Option
}

// WithMaxActive caps the values of each address at n, dialing, leased and
// idle; at the cap, checkouts wait in arrival order. 0, the default, means
// no cap. See connpool.WithMaxActive.
func WithMaxActive(n int) Option { return Option{connpool.WithMaxActive(n)} }

// WithWaitTimeout bounds how long a checkout waits at a [WithMaxActive]
// cap and at the [WithMaxTotal] cap together; it then fails with
// [ErrExhausted]. 0, the default, means no bound
// but the checkout's context.
func WithWaitTimeout(d time.Duration) Option { return Option{connpool.WithWaitTimeout(d)} }

// WithMaxTotal caps the open values across all addresses at n: at the
// cap, a checkout closes the least recently returned idle value of any
// address to make room, or waits in arrival order across addresses. See
// connpool.WithMaxTotal.
func WithMaxTotal(n int) Option { return Option{connpool.WithMaxTotal(n)} }

// WithMaxIdle caps idle values across all addresses at n, closing the
// least recently returned one to make room. See connpool.WithMaxIdle.
func WithMaxIdle(n int) Option { return Option{connpool.WithMaxIdle(n)} }

// WithMaxLifetime retires values by age: none is handed out once it is d
// old, with a jitter of up to 10%. See connpool.WithMaxLifetime.
func WithMaxLifetime(d time.Duration) Option { return Option{connpool.WithMaxLifetime(d)} }

// WithMinIdle keeps at least n idle values ready at every address the
// pool has seen and not drained, topped up by the cleaner with bounded
// dials and backoff after dial errors. See connpool.WithMinIdle.
func WithMinIdle(n int) Option { return Option{connpool.WithMinIdle(n)} }

// WithoutLivenessCheck turns off the built-in liveness check (see the
// package documentation); the validator, if set, still runs.
func WithoutLivenessCheck() Option { return Option{connpool.WithoutLivenessCheck()} }

// WithRetryBudget bounds the retries of Do; see connpool.WithRetryBudget.
func WithRetryBudget(share float64, perSecond int) Option {
	return Option{connpool.WithRetryBudget(share, perSecond)}
}

// WithValidator sets a function that Get runs on an idle value before
// handing it out, after the liveness check, if the value sat idle for at
// least minIdle (0: every time). It runs outside every lock and may do I/O,
// such as a ping. A value it rejects is closed and the next one tried, or a
// new one dialed. A nil fn is the same as no validator. Negative minIdle is
// rejected by [New].
func WithValidator[T io.Closer](fn func(T) error, minIdle time.Duration) Option {
	var check func(io.Closer) error
	if fn != nil {
		check = func(v io.Closer) error {
			t, _ := v.(T)
			return fn(t)
		}
	}
	return Option{bridge.ValidatorOption(check, minIdle).(connpool.Option)}
}

// WithShared lets up to maxConcurrent leases hold a value at once, for
// clients that multiplex calls, such as a *rpc.Client or a
// *grpc.ClientConn (set maxConcurrent to the server's stream limit). The
// value itself must then be safe for concurrent use.
//
//   - Get leases the least-loaded value of the address that has room.
//     When every value is full, it takes an idle value or dials one if
//     [WithMaxActive] allows, and otherwise waits in arrival order for a
//     share, a value or a slot, bounded by [WithWaitTimeout] and its
//     context. GetFresh always starts a new value.
//   - A value whose last lease ends goes back to the idle stack, so the
//     idle timeout, the cleaner, [WithMaxIdle] and [WithMinIdle] (which
//     keeps idle values ready next to those in use) work as in exclusive
//     mode.
//   - A value leaves rotation, taking no new lease, when a lease on it is
//     released (Release, ReleaseNow, or a connection error in Do), when
//     its Closed channel is closed, when it reaches its [WithMaxLifetime]
//     and when its address is drained. It is closed when its last lease
//     ends, gracefully, as HTTP/2 handles GOAWAY; ReleaseNow closes it at
//     once. Leases still running on it get the client's own errors, and Do
//     retries those marked [Idempotent] on a share of another value.
//   - The socket peek of the liveness check runs only on idle values: a
//     socket in use may hold a reply for another lease. A value that is
//     in use is judged by its Closed channel, if it has one.
//   - Stats reports Shared, Leases and PeakLeases per address.
//
// maxConcurrent must be at least 1; [New] rejects other values.
func WithShared(maxConcurrent int) Option {
	return Option{bridge.SharedOption(maxConcurrent).(connpool.Option)}
}

// WithTrace sets hooks that the pool calls as its values come and go: dial,
// wait, got, put back, closed with a reason, and Do's retries. See
// connpool.Trace, which says in what order they run and what a panicking
// hook does. A nil t means none.
func WithTrace(t *Trace) Option { return Option{connpool.WithTrace(t)} }

// WithLeakDetection reports each lease held for longer than threshold,
// once, with its address and the stack of the Get that took it. See
// connpool.WithLeakDetection for its cost and timing. 0, the default, is
// off.
func WithLeakDetection(threshold time.Duration, report func(LeakReport)) Option {
	return Option{connpool.WithLeakDetection(threshold, report)}
}
