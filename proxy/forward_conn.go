package proxy

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Connection helpers of the forward door: tunnel connections, their set
// (closed at shutdown) and the listener that feeds intercepted ones to the
// inner server.

// tunnelConn is an intercepted client connection; r holds the byte peeked
// to tell TLS from plain HTTP.
type tunnelConn struct {
	net.Conn
	r       *bufio.Reader
	t       *tunnel
	once    sync.Once
	onClose func()
}

func (c *tunnelConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *tunnelConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// blindConn is the ERP side of a blind tunnel: each byte either way
// extends its idle deadline, and closing it records the tunnel's end.
type blindConn struct {
	net.Conn
	idle     time.Duration
	start    time.Time
	up, down atomic.Int64
	once     sync.Once
	onClose  func()
}

func (c *blindConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(p)
	c.down.Add(int64(n))
	return n, err
}

func (c *blindConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	c.up.Add(int64(n))
	return n, err
}

func (c *blindConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// connSet holds the tunnels open now and counts the CONNECTs being set up;
// after closeAll it takes no more of either.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	setup  sync.WaitGroup // only added to under mu while open, so wait is safe after closeAll
}

func (s *connSet) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.setup.Add(1)
	return true
}

func (s *connSet) end()  { s.setup.Done() }
func (s *connSet) wait() { s.setup.Wait() }

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	list := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.mu.Unlock()
	for _, c := range list {
		c.Close()
	}
}

// Len is the number of tunnels open now.
func (s *connSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// chanListener feeds connections made elsewhere (intercepted tunnels) to
// an http.Server.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "tunnel" }
func (chanAddr) String() string  { return "intercepted-tunnels" }
