package agent

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestClosingDialerClosesThePreviousSocket: a second dial closes the
// first socket, so failed handshakes do not pile up descriptors.
func TestClosingDialerClosesThePreviousSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	d := newClosingDialer(nil)
	if _, err := d.Dial("tcp", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	first := <-accepted
	if _, err := d.Dial("tcp", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("first socket after the second dial: got %v, want EOF (closed)", err)
	}
}
