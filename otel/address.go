package otel

import (
	"net"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// serverAttributes returns the server.address and server.port attributes
// of a pool address. An address that net.JoinHostPort gives back from its
// host and a decimal port of at most 65535, such as "10.0.0.7:11211" or
// "[::1]:80", is split into the host, without brackets, and the port. Any
// other address, such as a Unix socket path, "host:http", "host:080" or
// "[host]:80", is kept whole in server.address, without server.port, so
// that two addresses never share attributes.
func serverAttributes(address string) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(address)
	if err == nil && host != "" {
		if n, err := strconv.ParseUint(port, 10, 16); err == nil &&
			strconv.FormatUint(n, 10) == port && net.JoinHostPort(host, port) == address {
			return []attribute.KeyValue{semconv.ServerAddress(host), semconv.ServerPort(int(n))}
		}
	}
	return []attribute.KeyValue{semconv.ServerAddress(address)}
}
