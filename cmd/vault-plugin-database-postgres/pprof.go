package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// pprofEnv names the loopback address (host:port) on which the plugin serves
// net/http/pprof when set; unset, nothing listens. `make bench` sets it to
// profile the plugin process under load (Vault and PostgreSQL share the
// cores, so only a profile of this process says where its time goes).
const pprofEnv = "PGVAULT_PPROF_ADDR"

// servePprof starts the profiling endpoint if pprofEnv asks for one. Only a
// loopback address is accepted: a profile shows the plugin's memory, which
// holds credentials.
func servePprof(logger hclog.Logger) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		logger.Warn("not serving pprof: "+pprofEnv+" must be a loopback host:port such as 127.0.0.1:6060", "value", addr)
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		// A second process of the plugin (Vault may start more than one)
		// finds the port taken; the first one serves.
		logger.Warn("not serving pprof", "addr", addr, "error", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	logger.Info("serving pprof", "addr", l.Addr().String())
}
