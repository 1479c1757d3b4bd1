package pgtest

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a TCP proxy on a loopback port in front of a server (TLS passes
// through untouched) that breaks the path on demand: it kills every
// connection (a restart, a failover: KillAll), refuses new ones (the server
// is down: Down, then Up on the same port), silently swallows traffic on the
// connections it has (a NAT mapping dropped after hours idle:
// BlackholeAll), or cuts the connections it has at their next statement
// (Arm). With a delay it stands in for a database across a network.
type Proxy struct {
	target string
	delay  time.Duration
	port   int
	fired  chan struct{}

	mu     sync.Mutex
	ln     net.Listener
	links  map[*link]bool // live connections: KillAll and Arm reach them
	silent map[*link]bool // blackholed connections: only Close ends them
}

// CutMode is how an armed Proxy cuts a connection (Arm).
type CutMode int32

const (
	// CutBefore drops the chunk and closes both sides: the statement never
	// reaches the server.
	CutBefore CutMode = iota + 1
	// CutAfter forwards the chunk, then closes both sides before any reply
	// is passed back: the server runs the statement, the client never
	// learns how it went.
	CutAfter
)

// cutChunk separates a statement from pgxpool's liveness ping ("-- ping"
// in a TLS record is well under it): an armed link cuts at its first
// client→server chunk larger than this.
const cutChunk = 120

// link is one client connection and the proxy's connection to the target.
type link struct {
	client, server net.Conn
	blackholed     atomic.Bool
	mode           atomic.Int32 // a CutMode once armed, 0 otherwise
	cut            atomic.Bool  // replies are dropped once set
}

// NewProxy starts a Proxy on a free loopback port in front of target
// (host:port). A delay above zero delivers every chunk that long after it
// was read, in both directions, without holding chunks behind each other's
// delays; zero passes each chunk on at once. Call Close when done.
func NewProxy(target string, delay time.Duration) (*Proxy, error) {
	p := &Proxy{target: target, delay: delay, fired: make(chan struct{}, 8),
		links: map[*link]bool{}, silent: map[*link]bool{}}
	if err := p.listen(0); err != nil {
		return nil, err
	}
	p.port = p.ln.Addr().(*net.TCPAddr).Port
	return p, nil
}

// Port is the loopback port the proxy listens on, the same after Up.
func (p *Proxy) Port() int { return p.port }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

func (p *Proxy) listen(port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.accept(ln)
	return nil
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, server: s}
		p.mu.Lock()
		p.links[l] = true
		p.mu.Unlock()
		go p.serve(l)
	}
}

// serve copies both ways until both directions have ended, then forgets l.
func (p *Proxy) serve(l *link) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, l.client, l.server, true) }()
	go func() { defer wg.Done(); p.pipe(l, l.server, l.client, false) }()
	wg.Wait()
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	delete(p.silent, l)
	p.mu.Unlock()
}

// pipe copies src to dst; up is the client→server direction, the one that
// an armed link cuts. When src ends it closes dst, unless the link is
// blackholed: then neither side learns of the other's end.
func (p *Proxy) pipe(l *link, src, dst net.Conn, up bool) {
	out := newOutlet(dst, p.delay)
	defer func() { out.close(!l.blackholed.Load()) }()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if mode := l.cutAt(n, up); mode != 0 {
			// Marked cut before the server can answer, so that the other
			// direction drops the reply.
			l.cut.Store(true)
			if mode == CutAfter {
				_ = out.send(buf[:n])
			}
			out.close(true)
			l.client.Close()
			select {
			case p.fired <- struct{}{}:
			default:
			}
			return
		}
		if n > 0 && !l.blackholed.Load() && !l.cut.Load() {
			if out.send(buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// close closes both ends of l.
func (l *link) close() {
	l.client.Close()
	l.server.Close()
}

// cutAt returns how l is cut at an n-byte chunk (0: it is not), disarming
// l so that it cuts once.
func (l *link) cutAt(n int, up bool) CutMode {
	mode := l.mode.Load()
	if up && mode != 0 && n > cutChunk && l.mode.CompareAndSwap(mode, 0) {
		return CutMode(mode)
	}
	return 0
}

// KillAll closes every connection the proxy has (not the blackholed ones);
// new connections pass.
func (p *Proxy) KillAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.close()
	}
	clear(p.links)
}

// BlackholeAll makes every connection the proxy has swallow what either
// side sends, without closing anything; new connections pass.
func (p *Proxy) BlackholeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.blackholed.Store(true)
		p.silent[l] = true
	}
	clear(p.links)
}

// Arm makes every connection the proxy has now cut, once, at its next
// client→server chunk larger than a liveness ping (the statement of
// interest), as mode says; connections opened later are not armed. Fired
// receives a value for each cut.
func (p *Proxy) Arm(mode CutMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.mode.Store(int32(mode))
	}
}

// Fired receives a value each time an armed connection is cut (up to 8
// unread ones are kept).
func (p *Proxy) Fired() <-chan struct{} { return p.fired }

// Down stops accepting connections: new ones are refused, the ones the
// proxy has stay.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

// Up accepts connections again, on the same port, after Down.
func (p *Proxy) Up() error {
	p.mu.Lock()
	up := p.ln != nil
	p.mu.Unlock()
	if up {
		return errors.New("pgtest: the proxy is up")
	}
	return p.listen(p.port)
}

// Close stops accepting connections and closes every connection, the
// blackholed ones too.
func (p *Proxy) Close() {
	p.Down()
	p.KillAll()
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.silent {
		l.close()
	}
	clear(p.silent)
}

// outlet writes chunks to dst: at once, or with a delay each chunk delay
// after it was read, in order, from a goroutine of its own, so that a
// chunk waits for its own time and not behind the previous chunks' delays.
type outlet struct {
	dst    net.Conn
	delay  time.Duration
	q      chan chunk // nil without a delay
	closed bool
	// closeDst, set before q closes, tells the writer whether to close dst
	// once the queue is flushed.
	closeDst bool
}

type chunk struct {
	b  []byte
	at time.Time
}

func newOutlet(dst net.Conn, delay time.Duration) *outlet {
	o := &outlet{dst: dst, delay: delay}
	if delay > 0 {
		o.q = make(chan chunk, 1024)
		go o.write()
	}
	return o
}

// send passes b on, or queues a copy of it; an error means dst is gone.
func (o *outlet) send(b []byte) error {
	if o.q == nil {
		_, err := o.dst.Write(b)
		return err
	}
	o.q <- chunk{append([]byte(nil), b...), time.Now().Add(o.delay)}
	return nil
}

// close ends the outlet once: what is queued is still delivered, then dst
// is closed if closeDst.
func (o *outlet) close(closeDst bool) {
	if o.closed {
		return
	}
	o.closed = true
	if o.q == nil {
		if closeDst {
			o.dst.Close()
		}
		return
	}
	o.closeDst = closeDst
	close(o.q)
}

func (o *outlet) write() {
	failed := false
	for c := range o.q {
		if failed {
			continue // drain, so that send never blocks on a dead dst
		}
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := o.dst.Write(c.b); err != nil {
			failed = true
			o.dst.Close()
		}
	}
	if o.closeDst {
		o.dst.Close()
	}
}
