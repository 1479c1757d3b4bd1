package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of /proc/<pid>/stat CPU times.
const clockTick = 10 * time.Millisecond

// procInfo is what /proc/<pid>/stat says about a process.
type procInfo struct {
	ppid int
	// cpu is user+system time of the process, plus that of its children
	// it has waited for (the postmaster reaps ended backends).
	cpu time.Duration
}

func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}, false
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procInfo{}, false
	}
	num := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	ticks := num(14) + num(15) + num(16) + num(17)
	return procInfo{ppid: int(num(4)), cpu: time.Duration(ticks) * clockTick}, true
}

// allPIDs lists the running processes.
func allPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pluginPIDs lists the processes running the plugin binary in pluginDir.
func pluginPIDs(binary string) []int {
	var out []int
	for _, pid := range allPIDs() {
		exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		if err == nil && strings.TrimSuffix(exe, " (deleted)") == binary {
			out = append(out, pid)
		}
	}
	return out
}

// treeCPU is the CPU time of pid and of its live children (a postmaster
// and its backends; ended backends are counted in the postmaster's
// children time).
func treeCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	root, ok := readProc(pid)
	if !ok {
		return 0
	}
	total := root.cpu
	for _, p := range allPIDs() {
		if info, ok := readProc(p); ok && info.ppid == pid {
			total += info.cpu
		}
	}
	return total
}

// rssKiB reads VmRSS and VmHWM (peak) of pid in KiB.
func rssKiB(pid int) (rss, peak int64) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			peak = v
		}
	}
	return rss, peak
}
