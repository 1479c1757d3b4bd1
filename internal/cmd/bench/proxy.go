package main

import (
	"net"
	"time"
)

// delayProxy forwards TCP to upstream, delivering every chunk `delay` after
// it was read, in both directions, without serializing chunks behind each
// other's delays: a stand-in for a database across a network.
type delayProxy struct {
	l        net.Listener
	upstream string
	delay    time.Duration
}

func newDelayProxy(upstream string, delay time.Duration) (*delayProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{l: l, upstream: upstream, delay: delay}
	go p.serve()
	return p, nil
}

func (p *delayProxy) Addr() string { return p.l.Addr().String() }
func (p *delayProxy) Close() error { return p.l.Close() }

func (p *delayProxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		go func() {
			out, err := net.Dial("tcp", p.upstream)
			if err != nil {
				in.Close()
				return
			}
			go p.pipe(in, out)
			go p.pipe(out, in)
		}()
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

func (p *delayProxy) pipe(src, dst net.Conn) {
	q := make(chan chunk, 1024)
	go func() {
		defer dst.Close()
		for c := range q {
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(p.delay)}
		}
		if err != nil { // io.EOF or a closed connection: flush and close
			close(q)
			return
		}
	}
}
