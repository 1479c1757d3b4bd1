package main

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestPprofServesOnlyWhenAskedAndOnLoopback: unset, nothing listens; a
// loopback address serves the profiles; any other address is refused, since
// a heap profile shows memory that holds credentials.
func TestPprofServesOnlyWhenAskedAndOnLoopback(t *testing.T) {
	get := func(addr string) error {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/", addr))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	logger := hclog.NewNullLogger()

	unset := freeAddr(t, "127.0.0.1")
	t.Setenv(pprofEnv, "")
	servePprof(logger)
	if err := get(unset); err == nil {
		t.Fatalf("something serves pprof on %s with %s unset", unset, pprofEnv)
	}

	loopback := freeAddr(t, "127.0.0.1")
	t.Setenv(pprofEnv, loopback)
	servePprof(logger)
	if err := get(loopback); err != nil {
		t.Fatalf("%s=%s: pprof not served: %v", pprofEnv, loopback, err)
	}

	ips, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ips {
		ip, ok := a.(*net.IPNet)
		if !ok || ip.IP.IsLoopback() || ip.IP.To4() == nil {
			continue
		}
		outside := freeAddr(t, ip.IP.String())
		t.Setenv(pprofEnv, outside)
		servePprof(logger)
		if err := get(outside); err == nil {
			t.Fatalf("%s=%s (not loopback): pprof is served", pprofEnv, outside)
		}
		return
	}
	t.Log("no non-loopback IPv4 address to try")
}
