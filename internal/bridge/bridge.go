// Package bridge gives package clientpool what it needs of the engine of
// package connpool that connpool does not export. connpool sets these
// variables in its init; clientpool imports connpool, so they are set
// before any clientpool code runs. The values typed any are connpool types
// that this package cannot name without an import cycle: a connpool.Option
// for the options, a *connpool.Conn for the handles.
package bridge

import (
	"context"
	"io"
	"time"
)

var (
	// DialOption returns a connpool.Option that makes the pool dial with
	// dial, whose values may be any io.Closer.
	DialOption func(dial func(ctx context.Context, address string) (io.Closer, error)) any

	// ValidatorOption returns the connpool.Option of WithValidator for a
	// validator of any io.Closer.
	ValidatorOption func(fn func(io.Closer) error, minIdle time.Duration) any

	// Value returns the value a *connpool.Conn holds, or nil once the
	// handle ended.
	Value func(c any) io.Closer

	// MarkSent records on a *connpool.Conn that its request may have been
	// sent, for the retry rules of Do.
	MarkSent func(c any)

	// SharedOption returns the connpool.Option of clientpool.WithShared:
	// up to n leases share a value.
	SharedOption func(n int) any

	// ReleaseNow ends a *connpool.Conn as Release does, but closes a value
	// that other leases share at once.
	ReleaseNow func(c any) error

	// Shared reports whether a *connpool.Pool is in shared mode.
	Shared func(p any) bool
)
