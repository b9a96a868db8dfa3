//go:build linux

package connpool

// peerGone reports whether a TCP connection in state, as TCP_INFO gives
// it, has received its peer's FIN.
func peerGone(state uint8) bool {
	const tcpCloseWait, tcpLastAck, tcpClose = 8, 9, 7
	switch state {
	case tcpCloseWait, tcpLastAck, tcpClose:
		return true
	}
	return false
}
