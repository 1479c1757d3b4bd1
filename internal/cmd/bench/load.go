package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// cell accumulates one measurement (one variant, operation, concurrency
// and path) over the rounds it is interleaved in.
type cell struct {
	n    int
	wall time.Duration
	lat  []time.Duration
}

func (c *cell) add(o cell) {
	c.n += o.n
	c.wall += o.wall
	c.lat = append(c.lat, o.lat...)
}

// rate is operations per second of wall time.
func (c *cell) rate() float64 {
	if c == nil || c.wall <= 0 {
		return 0
	}
	return float64(c.n) / c.wall.Seconds()
}

// pct returns the q-quantile (0..1) of the latencies.
func (c *cell) pct(q float64) time.Duration {
	if c == nil || len(c.lat) == 0 {
		return 0
	}
	s := slices.Clone(c.lat)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// runLoad calls op(i) for i in [0,n) from conc workers and times it; the
// first error stops the run.
func runLoad(ctx context.Context, n, conc int, op func(ctx context.Context, i int) error) (cell, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for w := 0; w < min(conc, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				if err := op(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	return cell{n: n, wall: time.Since(start), lat: lat}, firstErr
}

// rounds splits n requests into r rounds (the last takes the rest).
func rounds(n, r int) []int {
	out := make([]int, r)
	for i := range out {
		out[i] = n / r
	}
	out[r-1] += n % r
	return out
}

// rotate returns s started at offset k, so that every variant takes every
// place in the order over the rounds.
func rotate[T any](s []T, k int) []T {
	k %= len(s)
	return append(slices.Clone(s[k:]), s[:k]...)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// password returns a password shaped like Vault's default policy output
// (20 characters).
func password() string { return "A1a-" + randHex(8) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
