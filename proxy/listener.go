package proxy

import (
	"net"
	"sync"
	"sync/atomic"
)

// trackingListener remembers the connections it accepted until they close,
// and whether each has sent a byte yet.
//
// fasthttp (v1.74) marks a new connection active before its first byte
// arrives, so Server.Shutdown waits up to ReadTimeout for a connection that
// a client opened and never used (Go's http.Transport opens such spares).
// closeSilent lets Shutdown close exactly those: nothing in flight is cut.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newTrackingListener(ln net.Listener) *trackingListener {
	return &trackingListener{Listener: ln, conns: map[*trackedConn]struct{}{}}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// closeSilent closes every connection that has never sent a byte.
func (l *trackingListener) closeSilent() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if !c.used.Load() {
			c.Conn.Close()
			delete(l.conns, c)
		}
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	used atomic.Bool
	once sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.used.Load() {
		c.used.Store(true)
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
