//go:build linux

package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"
)

// pluginEnv is what Vault (1.12+, AutoMTLS) sets for a database plugin it
// starts: with it the binary serves instead of refusing to run.
func pluginEnv() []string {
	return append(os.Environ(),
		dbplugin.HandshakeConfig.MagicCookieKey+"="+dbplugin.HandshakeConfig.MagicCookieValue,
		"PLUGIN_PROTOCOL_VERSIONS=5",
		"VAULT_PLUGIN_AUTOMTLS_ENABLED=true",
	)
}

// TestExitsWhenVaultIsKilled starts the plugin from a parent that stands in
// for Vault, SIGKILLs the parent, and expects the plugin to exit on its own
// (go-plugin alone keeps serving, re-parented, with its pools and
// credentials in memory). The test process is a child subreaper, so the
// orphan becomes its child and can be waited for, or killed if it lingers.
func TestExitsWhenVaultIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "plugin")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	if err := setChildSubreaper(); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	logFile := filepath.Join(dir, "plugin.log")
	parent, pid := startUnderParent(t, bin, logFile)
	exited := make(chan syscall.WaitStatus, 1)
	var reaped chan struct{} // set once the plugin is ours to wait for
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if reaped != nil {
			<-reaped
		}
	})

	// Serving: go-plugin's handshake line (CORE-VERSION|APP-VERSION|unix|...).
	waitFor(t, 30*time.Second, func() error {
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), "|unix|") {
			return errors.New("the plugin has not printed its handshake line; log:\n" + string(b))
		}
		return nil
	})

	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	// Only now is the plugin our child (re-parented to this subreaper).
	reaped = make(chan struct{})
	go func() {
		defer close(reaped)
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		exited <- ws
	}()
	select {
	case ws := <-exited:
		b, _ := os.ReadFile(logFile)
		if ws.Signaled() {
			t.Fatalf("plugin killed by %v instead of exiting; log:\n%s", ws.Signal(), b)
		}
		if !strings.Contains(string(b), "the process that started the plugin is gone") {
			t.Fatalf("plugin exited (status %d) without saying why; log:\n%s", ws.ExitStatus(), b)
		}
	case <-time.After(10 * time.Second):
		b, _ := os.ReadFile(logFile)
		t.Fatalf("plugin (pid %d) still running 10s after its parent was killed; log:\n%s", pid, b)
	}
}

// startUnderParent starts bin from a shell that stands in for Vault, with
// its output in logFile, and returns the shell and the plugin's pid. The
// shell is the plugin's parent, as Vault is: it prints the plugin's pid and
// waits.
func startUnderParent(t *testing.T, bin, logFile string) (*exec.Cmd, int) {
	t.Helper()
	parent := exec.Command("sh", "-c", `"$0" >"$1" 2>&1 & echo $!; wait`, bin, logFile)
	parent.Env = pluginEnv()
	parent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the plugin's pid from its parent: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("plugin pid %q: %v", line, err)
	}
	return parent, pid
}

func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}

func waitFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
