package connpool

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"
)

// LeakReport describes a conn that has been checked out for longer than
// the threshold of [WithLeakDetection].
type LeakReport struct {
	// Address is the conn's destination.
	Address string
	// Held is how long the conn had been checked out when it was found.
	Held time.Duration
	// Stack is the stack of the goroutine that checked the conn out, from
	// the caller of the pool's method (Get, GetContext, New, NewContext,
	// Do, or the clientpool or balancer method that called them) down,
	// one function per line followed by its file and line, as in a
	// panic's trace.
	Stack string
}

// WithLeakDetection makes the pool report conns that have been checked out
// for longer than threshold without being returned with Close or
// Release, as HikariCP's leakDetectionThreshold does: report is called
// once for each, with its address and the stack of the Get that took it.
// A conn returned before the threshold is never reported; one returned
// after it was reported is not reported again. In clientpool, each lease
// counts as a conn.
//
// The cleaner looks for such conns on every tick, so a conn is reported
// between threshold and threshold plus a tick after its checkout (a
// sixteenth of threshold, or of the idle timeout, max lifetime or
// validator's minIdle if shorter, and at least 1 ms). report runs on the
// cleaner's goroutine, outside every lock; a report that panics ends the
// program. Conns still held when the pool closes are no longer looked for.
//
// Every checkout then captures its caller's stack and notes the conn under
// a lock that all checkouts share: about a microsecond each. Leave it off
// where that matters. The default, a zero threshold, is off. A negative
// threshold, or a positive one with a nil report, is rejected by [New].
func WithLeakDetection(threshold time.Duration, report func(LeakReport)) Option {
	return func(o *options) {
		o.leakThreshold = threshold
		o.leakReport = report
	}
}

// leakStackDepth is how many frames a checkout's stack keeps.
const leakStackDepth = 32

// leakTracker notes the conns checked out of a pool with leak detection,
// and finds those held past the threshold.
type leakTracker struct {
	threshold int64 // nanoseconds
	report    func(LeakReport)

	mu sync.Mutex // protects held; taken before any bucket.mu
	// held lists the handles checked out and not yet reported, oldest
	// first. A handle that ended (Close or Release) is dropped by the next
	// scan: handles are never reused, so an ended one stays ended.
	held []heldConn
}

// heldConn is a checked-out handle and where and when it was taken.
type heldConn struct {
	c     *Conn
	since int64 // the pool's clock reading at checkout
	stack []uintptr
}

// add notes c, checked out at the clock reading now, with its caller's
// stack.
func (t *leakTracker) add(c *Conn, now int64) {
	var pcs [leakStackDepth]uintptr
	n := runtime.Callers(2, pcs[:])
	h := heldConn{c: c, since: now, stack: append([]uintptr(nil), pcs[:n]...)}
	t.mu.Lock()
	t.held = append(t.held, h)
	t.mu.Unlock()
}

// scan drops the handles that ended and reports, once, those held for
// the threshold or longer at the clock reading now. It runs on the
// cleaner's goroutine and calls report after releasing the lock.
func (t *leakTracker) scan(now int64) {
	var leaks []heldConn
	t.mu.Lock()
	kept := t.held[:0]
	for _, h := range t.held {
		switch {
		case h.c.ended(): // returned or released
		case now-h.since >= t.threshold:
			leaks = append(leaks, h)
		default:
			kept = append(kept, h)
		}
	}
	clear(t.held[len(kept):])
	t.held = kept
	t.mu.Unlock()
	for _, h := range leaks {
		t.report(LeakReport{
			Address: h.c.Address(),
			Held:    time.Duration(now - h.since),
			Stack:   formatStack(h.stack),
		})
	}
}

// libraryPrefixes are the function name prefixes of this module's
// packages, whose frames are trimmed from the top of a leak's stack so
// that it starts at the caller.
var libraryPrefixes = []string{
	"github.com/seed73091bf1/connpool.",
	"github.com/seed73091bf1/connpool/clientpool.",
	"github.com/seed73091bf1/connpool/balancer.",
}

// formatStack formats the frames of pcs, less the library's own frames on
// top, as a panic's trace does.
func formatStack(pcs []uintptr) string {
	var sb strings.Builder
	frames := runtime.CallersFrames(pcs)
	top := true
	for {
		f, more := frames.Next()
		if top && hasAnyPrefix(f.Function, libraryPrefixes) {
			if !more {
				break
			}
			continue
		}
		top = false
		fmt.Fprintf(&sb, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	return sb.String()
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
