package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// Cluster is a Vault cluster with integrated storage (Raft) on loopback.
type Cluster struct {
	Nodes     []*Server
	RootToken string
	UnsealKey string
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// StartRaftCluster starts n Vault nodes that form one Raft cluster: the first
// is initialized and unsealed, the others join it and are unsealed with the
// same key. Every node has the plugin in its plugin directory.
func StartRaftCluster(ctx context.Context, vaultBin, dir string, plugin *Plugin, n int) (*Cluster, error) {
	type ports struct{ api, cluster int }
	ps := make([]ports, n)
	for i := range ps {
		a, err := pgtest.FreePort()
		if err != nil {
			return nil, err
		}
		c, err := pgtest.FreePort()
		if err != nil {
			return nil, err
		}
		ps[i] = ports{a, c}
	}
	cl := &Cluster{}
	for i := 0; i < n; i++ {
		nodeDir := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		if err := os.MkdirAll(filepath.Join(nodeDir, "raft"), 0o700); err != nil {
			return nil, err
		}
		pluginDir := filepath.Join(nodeDir, "plugins")
		if err := installPlugin(pluginDir, plugin); err != nil {
			return nil, err
		}
		join := ""
		if i > 0 {
			join = fmt.Sprintf("  retry_join {\n    leader_api_addr = \"http://127.0.0.1:%d\"\n  }\n", ps[0].api)
		}
		hcl := fmt.Sprintf(`storage "raft" {
  path = %q
  node_id = "node%d"
  performance_multiplier = 1
%s}
listener "tcp" {
  address = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable = true
}
api_addr = "http://127.0.0.1:%d"
cluster_addr = "https://127.0.0.1:%d"
plugin_directory = %q
disable_mlock = true
ui = false
`, filepath.Join(nodeDir, "raft"), i+1, join, ps[i].api, ps[i].cluster, ps[i].api, ps[i].cluster, pluginDir)
		cfg := filepath.Join(nodeDir, "vault.hcl")
		if err := os.WriteFile(cfg, []byte(hcl), 0o600); err != nil {
			return nil, err
		}
		s := &Server{Addr: fmt.Sprintf("http://127.0.0.1:%d", ps[i].api), PluginDir: pluginDir, LogFile: filepath.Join(nodeDir, "vault.log")}
		if err := s.start(vaultBin, "server", "-config="+cfg, "-log-level=debug"); err != nil {
			cl.Stop()
			return nil, err
		}
		c, err := newClient(s.Addr, "")
		if err != nil {
			cl.Stop()
			return nil, err
		}
		s.Client = c
		cl.Nodes = append(cl.Nodes, s)
	}

	first := cl.Nodes[0]
	var initResp *api.InitResponse
	err := pgtest.Poll(ctx, 60*time.Second, pollInterval, func() error {
		var err error
		initResp, err = first.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		return err
	})
	if err != nil {
		cl.Stop()
		return nil, fmt.Errorf("initializing node1: %w\n%s", err, first.LogTail())
	}
	cl.RootToken, cl.UnsealKey = initResp.RootToken, initResp.Keys[0]
	for _, s := range cl.Nodes {
		s.Client.SetToken(cl.RootToken)
	}
	if _, err := first.Client.Sys().UnsealWithContext(ctx, cl.UnsealKey); err != nil {
		cl.Stop()
		return nil, fmt.Errorf("unsealing node1: %w", err)
	}
	if err := first.waitActive(ctx, 60*time.Second); err != nil {
		cl.Stop()
		return nil, fmt.Errorf("%w\n%s", err, first.LogTail())
	}
	// Joiners start as non-voters; autopilot promotes them once stable.
	// Shorten that wait, then wait for every node to vote, so the cluster
	// survives losing its leader.
	if _, err := first.Client.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
		map[string]interface{}{"server_stabilization_time": "2s", "cleanup_dead_servers": false}); err != nil {
		cl.Stop()
		return nil, fmt.Errorf("autopilot configuration: %w", err)
	}
	for _, s := range cl.Nodes[1:] {
		// retry_join needs the node sealed and asks for the key once joined.
		err := pgtest.Poll(ctx, 90*time.Second, pollInterval, func() error {
			st, err := s.Client.Sys().UnsealWithContext(ctx, cl.UnsealKey)
			if err != nil {
				return err
			}
			if st.Sealed {
				return errors.New("still sealed")
			}
			return nil
		})
		if err != nil {
			cl.Stop()
			return nil, fmt.Errorf("unsealing %s: %w\n%s", s.Addr, err, s.LogTail())
		}
	}
	// Wait until every node reports itself a healthy standby or leader.
	for _, s := range cl.Nodes {
		err := pgtest.Poll(ctx, 60*time.Second, pollInterval, func() error {
			h, err := s.Client.Sys().HealthWithContext(ctx)
			if err != nil {
				return err
			}
			if h.Sealed || !h.Initialized {
				return errors.New("not ready")
			}
			return nil
		})
		if err != nil {
			cl.Stop()
			return nil, fmt.Errorf("node %s: %w", s.Addr, err)
		}
	}
	err = pgtest.Poll(ctx, 90*time.Second, pollInterval, func() error {
		sec, err := first.Client.Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
		if err != nil || sec == nil {
			return fmt.Errorf("reading raft configuration: %v", err)
		}
		cfg, _ := sec.Data["config"].(map[string]interface{})
		servers, _ := cfg["servers"].([]interface{})
		voters := 0
		for _, sv := range servers {
			if m, ok := sv.(map[string]interface{}); ok && m["voter"] == true {
				voters++
			}
		}
		if voters != n {
			return fmt.Errorf("%d of %d nodes are voters", voters, n)
		}
		return nil
	})
	if err != nil {
		cl.Stop()
		return nil, err
	}
	return cl, nil
}

// Leader returns the running node that is currently active.
func (c *Cluster) Leader(ctx context.Context) (*Server, error) {
	var leader *Server
	err := pgtest.Poll(ctx, 60*time.Second, pollInterval, func() error {
		for _, s := range c.Nodes {
			if !s.Running() {
				continue
			}
			l, err := s.Client.Sys().LeaderWithContext(ctx)
			if err == nil && l.IsSelf {
				leader = s
				return nil
			}
		}
		return errors.New("no active node")
	})
	return leader, err
}
