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
	ps, err := freeRaftPorts(n)
	if err != nil {
		return nil, err
	}
	cl := &Cluster{}
	for i := range ps {
		s, err := startRaftNode(vaultBin, dir, plugin, i, ps)
		if err != nil {
			cl.Stop()
			return nil, err
		}
		cl.Nodes = append(cl.Nodes, s)
	}
	for _, step := range []func(context.Context) error{cl.initFirst, cl.unsealJoiners, cl.waitHealthy, cl.waitVoters} {
		if err := step(ctx); err != nil {
			cl.Stop()
			return nil, err
		}
	}
	return cl, nil
}

// raftPorts are one node's API and cluster ports.
type raftPorts struct{ api, cluster int }

func freeRaftPorts(n int) ([]raftPorts, error) {
	ps := make([]raftPorts, n)
	for i := range ps {
		a, err := pgtest.FreePort()
		if err != nil {
			return nil, err
		}
		c, err := pgtest.FreePort()
		if err != nil {
			return nil, err
		}
		ps[i] = raftPorts{a, c}
	}
	return ps, nil
}

// raftHCL is a node's configuration: storage path, node number, the
// retry_join block (empty on the first node), API and cluster ports (each
// twice) and plugin directory.
const raftHCL = `storage "raft" {
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
`

// startRaftNode writes node i's directory and configuration and starts it;
// every node but the first joins the first.
func startRaftNode(vaultBin, dir string, plugin *Plugin, i int, ps []raftPorts) (*Server, error) {
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
	hcl := fmt.Sprintf(raftHCL, filepath.Join(nodeDir, "raft"), i+1, join, ps[i].api, ps[i].cluster, ps[i].api, ps[i].cluster, pluginDir)
	cfg := filepath.Join(nodeDir, "vault.hcl")
	if err := os.WriteFile(cfg, []byte(hcl), 0o600); err != nil {
		return nil, err
	}
	s := &Server{Addr: fmt.Sprintf("http://127.0.0.1:%d", ps[i].api), PluginDir: pluginDir, LogFile: filepath.Join(nodeDir, "vault.log")}
	if err := s.start(vaultBin, "", "server", "-config="+cfg, "-log-level=debug"); err != nil {
		return nil, err
	}
	return s, nil
}

// initFirst initializes and unseals the first node, gives every node's
// client the root token, and shortens autopilot's wait before it promotes
// joiners (they start as non-voters) to voters.
func (c *Cluster) initFirst(ctx context.Context) error {
	first := c.Nodes[0]
	var initResp *api.InitResponse
	err := pgtest.Poll(ctx, 60*time.Second, pollInterval, func() error {
		var err error
		initResp, err = first.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		return err
	})
	if err != nil {
		return fmt.Errorf("initializing node1: %w\n%s", err, first.LogTail())
	}
	c.RootToken, c.UnsealKey = initResp.RootToken, initResp.Keys[0]
	for _, s := range c.Nodes {
		s.Client.SetToken(c.RootToken)
	}
	if _, err := first.Client.Sys().UnsealWithContext(ctx, c.UnsealKey); err != nil {
		return fmt.Errorf("unsealing node1: %w", err)
	}
	if err := first.waitActive(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, first.LogTail())
	}
	if _, err := first.Client.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
		map[string]interface{}{"server_stabilization_time": "2s", "cleanup_dead_servers": false}); err != nil {
		return fmt.Errorf("autopilot configuration: %w", err)
	}
	return nil
}

// unsealJoiners unseals every node but the first: retry_join needs the
// node sealed and asks for the key once joined.
func (c *Cluster) unsealJoiners(ctx context.Context) error {
	for _, s := range c.Nodes[1:] {
		err := pgtest.Poll(ctx, 90*time.Second, pollInterval, func() error {
			st, err := s.Client.Sys().UnsealWithContext(ctx, c.UnsealKey)
			if err != nil {
				return err
			}
			if st.Sealed {
				return errors.New("still sealed")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("unsealing %s: %w\n%s", s.Addr, err, s.LogTail())
		}
	}
	return nil
}

// waitHealthy waits until every node reports itself a healthy standby or
// leader.
func (c *Cluster) waitHealthy(ctx context.Context) error {
	for _, s := range c.Nodes {
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
			return fmt.Errorf("node %s: %w", s.Addr, err)
		}
	}
	return nil
}

// waitVoters waits until every node votes, so that the cluster survives
// losing its leader.
func (c *Cluster) waitVoters(ctx context.Context) error {
	first, n := c.Nodes[0], len(c.Nodes)
	return pgtest.Poll(ctx, 90*time.Second, pollInterval, func() error {
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
