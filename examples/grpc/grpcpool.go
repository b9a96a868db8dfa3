// Package grpcpool pools *grpc.ClientConn values per backend address with
// clientpool, and puts a connpool balancer in front of them. It is an
// example meant to be copied: it imports nothing of connpool's internals.
//
//	pool, err := grpcpool.NewPool(8, time.Minute, 5*time.Second)
//	bp := clientpool.NewBalanced(pool, balancer.NewRoundRobin(endpoints))
//	err = grpcpool.CheckAny(ctx, bp, "")
//	...
//	pool.Close() // closes every ClientConn
//
// # Exclusive pooling
//
// The pool leases each ClientConn to one caller at a time, as it does with
// a net.Conn: the caller that holds it is the only one running RPCs on it,
// and the pool opens another ClientConn to the same backend when all of
// that backend's ClientConns are leased. This is what the example shows:
// the pool's rules (per-address idle stacks, limits, validation before
// reuse, release of a ClientConn whose RPC failed with a connection error,
// retries of idempotent requests, Close closing everything) apply to gRPC
// clients unchanged.
//
// A ClientConn does not need this: it multiplexes any number of concurrent
// RPCs over one HTTP/2 connection, so one ClientConn per backend, shared by
// every caller, is what most gRPC programs use. Exclusive leases still have
// uses (a stream that must own its connection, a cap on the connections
// per backend that also caps the work in flight, or a server that limits
// concurrent streams per connection), but sharing one value among several
// leases is a later feature of clientpool, not something this example
// pretends to do.
//
// # One backend per ClientConn
//
// Each ClientConn is made for one address, with the passthrough resolver,
// so that gRPC neither resolves the name to several backends nor balances
// among them: choosing the backend is the job of the balancer in front of
// the pool. gRPC's own channel idleness is turned off, so that a pooled
// ClientConn in state IDLE always means its connection was lost (see
// [Validate]); idle ClientConns are closed by the pool's idle timeout
// instead.
//
// # Errors
//
// clientpool decides what to do after an RPC from the error the Do
// function returns, and recognises a broken connection only by the errors
// connpool.IsConnError knows (io.EOF, io.ErrUnexpectedEOF, ECONNRESET and
// the like). gRPC reports a lost or refused connection as a status with
// code Unavailable, which wraps none of them. [Classify] translates: an
// Unavailable status becomes an error that wraps both the status and
// io.ErrUnexpectedEOF, so that Do releases the ClientConn and, for a
// request marked clientpool.Idempotent, retries it on a fresh ClientConn or
// another backend; status.Code and errors.Is still see the original status.
package grpcpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/seed73091bf1/connpool/clientpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

var (
	// ErrNotReady is wrapped by the errors of a dial whose ClientConn
	// failed to connect, and by [Validate] for a ClientConn that is not
	// READY.
	ErrNotReady = errors.New("grpcpool: connection not ready")
	// ErrNotServing is wrapped by the error of [Check] when the backend
	// answers with a status other than SERVING.
	ErrNotServing = errors.New("grpcpool: backend not serving")
)

// DefaultDialWait is how long a dial of [Dialer] waits for its ClientConn
// to become READY when no wait is given.
const DefaultDialWait = 5 * time.Second

// NewPool returns a pool of ClientConns that dials with [Dialer](dialWait),
// checks every idle ClientConn with [Validate] before handing it out, keeps
// at most capacity idle ClientConns per address and closes those idle for
// idleTimeout. capacity and idleTimeout mean what they mean for
// clientpool.New; opts are added after the validator, so a
// clientpool.WithValidator among them replaces it.
func NewPool(capacity int, idleTimeout, dialWait time.Duration, opts ...clientpool.Option) (*clientpool.Pool[*grpc.ClientConn], error) {
	all := make([]clientpool.Option, 0, len(opts)+1)
	all = append(all, clientpool.WithValidator(Validate, 0))
	all = append(all, opts...)
	return clientpool.New(Dialer(dialWait), capacity, idleTimeout, all...)
}

// Dialer returns a dial function for clientpool.New that makes a
// ClientConn to one address with grpc.NewClient and insecure (plaintext)
// credentials, as suits loopback and tests, then connects it and waits
// until it is READY. The dial fails, and closes the ClientConn, as soon as
// the first connection attempt fails (state TRANSIENT_FAILURE), with an
// error wrapping [ErrNotReady]; or when ctx ends or wait passes, with an
// error wrapping the context's error. wait bounds the dial even when the
// pool runs it in the background with a context that does not end; zero
// or negative means [DefaultDialWait].
//
// opts are added after the defaults (insecure credentials, no channel
// idleness) and may override them, with TLS credentials for instance.
func Dialer(wait time.Duration, opts ...grpc.DialOption) func(ctx context.Context, address string) (*grpc.ClientConn, error) {
	if wait <= 0 {
		wait = DefaultDialWait
	}
	all := make([]grpc.DialOption, 0, len(opts)+2)
	all = append(all,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithIdleTimeout(0), // the pool keeps idleness; see the package doc
	)
	all = append(all, opts...)
	return func(ctx context.Context, address string) (*grpc.ClientConn, error) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("grpcpool: connect %s: %w", address, err)
		}
		cc, err := grpc.NewClient("passthrough:///"+address, all...)
		if err != nil {
			return nil, fmt.Errorf("grpcpool: %s: %w", address, err)
		}
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := waitReady(ctx, cc); err != nil {
			_ = cc.Close()
			return nil, fmt.Errorf("grpcpool: connect %s: %w", address, err)
		}
		return cc, nil
	}
}

// waitReady starts cc connecting and waits until it is READY, its first
// attempt failed or ctx ended.
func waitReady(ctx context.Context, cc *grpc.ClientConn) error {
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("%w: state %s", ErrNotReady, s)
		}
		if !cc.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}

// Validate is a validator for clientpool.WithValidator: it accepts a
// ClientConn that is READY and rejects every other, with an error wrapping
// [ErrNotReady]. It only reads the state, so it is cheap enough to run at
// every checkout.
//
// A pooled ClientConn that was READY when it was returned leaves that state
// only because its connection broke: SHUTDOWN once closed, TRANSIENT_FAILURE
// after a failed reconnect, and IDLE when the server went away, since
// gRPC's pick_first policy moves a channel whose connection was lost to
// IDLE and reconnects only at the next RPC. Rejecting it makes the pool
// close it and dial afresh, so the RPC of the next caller does not pay for
// a reconnect that may well fail. (Channel idleness is off in ClientConns
// of [Dialer], so IDLE never just means quiet.)
func Validate(cc *grpc.ClientConn) error {
	if s := cc.GetState(); s != connectivity.Ready {
		return fmt.Errorf("%w: %s is %s", ErrNotReady, cc.CanonicalTarget(), s)
	}
	return nil
}

// Classify maps the error of an RPC to the rules of clientpool's Do, which
// return the ClientConn to the pool after nil or an error marked with
// clientpool.Clean or clientpool.CleanFailure and release (close) it after
// any other error:
//   - Unavailable: the connection was lost or refused. The result wraps err
//     and io.ErrUnexpectedEOF, a connection error for connpool.IsConnError,
//     so the ClientConn is released and an idempotent request retried.
//   - Canceled and DeadlineExceeded: err, unchanged, so the ClientConn is
//     released. A ClientConn outlives a cancelled RPC, but a deadline can
//     also mean a connection that silently stopped delivering, and a fresh
//     one costs little next to a hung call.
//   - Unknown, Internal, DataLoss, ResourceExhausted and Unimplemented: the
//     server answered, and is unwell or not the right one: marked with
//     clientpool.CleanFailure, the ClientConn is kept and the balancer
//     counts a failure of the backend.
//   - any other code: an answer of the application, marked with
//     clientpool.Clean: the ClientConn is kept and the backend counted as
//     healthy.
//   - an error that is no gRPC status: err, unchanged.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w (%w)", err, io.ErrUnexpectedEOF)
	case codes.Canceled, codes.DeadlineExceeded:
		return err
	case codes.Unknown, codes.Internal, codes.DataLoss, codes.ResourceExhausted, codes.Unimplemented:
		return clientpool.CleanFailure(err)
	default:
		return clientpool.Clean(err)
	}
}

// Check asks the backend of cc, with the Check RPC of the standard health
// service, whether service ("" for the server as a whole) is SERVING. An
// RPC error is returned through [Classify]; an answer other than SERVING
// is an error wrapping [ErrNotServing], marked with
// clientpool.CleanFailure: the ClientConn is fine, the backend is not. It
// is meant to be called from a Do function.
func Check(ctx context.Context, cc *grpc.ClientConn, service string) error {
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return Classify(err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return clientpool.CleanFailure(fmt.Errorf("%w: %q is %s", ErrNotServing, service, s))
	}
	return nil
}

// CheckAddress runs [Check] on a ClientConn of address leased from p with
// p.Do. The request is idempotent, so a reused ClientConn found broken is
// replaced by a fresh one and the check sent again.
func CheckAddress(ctx context.Context, p *clientpool.Pool[*grpc.ClientConn], address, service string) error {
	return p.Do(ctx, address, func(cc *grpc.ClientConn) error {
		return Check(ctx, cc, service)
	}, clientpool.Idempotent())
}

// CheckAny runs [Check] on a backend that bp picks, with bp.Do. The
// request is idempotent, so after a connection error it is sent again on a
// fresh ClientConn or to another backend; a backend whose dial fails is
// skipped as Balanced.Do describes.
func CheckAny(ctx context.Context, bp *clientpool.Balanced[*grpc.ClientConn], service string) error {
	return bp.Do(ctx, func(cc *grpc.ClientConn) error {
		return Check(ctx, cc, service)
	}, clientpool.Idempotent())
}
