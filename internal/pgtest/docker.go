package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"
)

// startDocker runs postgres:${PG_VERSION:-17} when a Docker daemon answers.
func startDocker(ctx context.Context) (*Server, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, err
	}
	if err := pool.Client.Ping(); err != nil {
		return nil, errors.New("no Docker daemon answers")
	}
	version := os.Getenv("PG_VERSION")
	if version == "" {
		version = "17"
	}
	password := randomPassword()
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: "postgres",
		Tag:        version,
		Env:        []string{"POSTGRES_PASSWORD=" + password, "POSTGRES_INITDB_ARGS=--auth=scram-sha-256"},
		Cmd:        []string{"postgres", "-c", "log_statement=all", "-c", "max_connections=300"},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return nil, fmt.Errorf("starting postgres:%s: %w", version, err)
	}
	_ = res.Expire(1800)
	port, _ := strconv.Atoi(res.GetPort("5432/tcp"))
	s := &Server{Host: "127.0.0.1", Port: port, SuperUser: "postgres", SuperPassword: password,
		Database: "postgres", SSLMode: "disable", Source: "docker postgres:" + version,
		stop: func() error { return pool.Purge(res) }}
	pool.MaxWait = 2 * time.Minute
	if err := pool.Retry(func() error { return s.CanLogin(ctx, s.SuperUser, s.SuperPassword) }); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("postgres:%s never became ready: %w", version, err)
	}
	return s, nil
}
