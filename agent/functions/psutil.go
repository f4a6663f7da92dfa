package functions

import (
	"context"
	"path/filepath"

	"github.com/shirou/gopsutil/v4/common"
)

// psutilContext points gopsutil at root's /proc, /sys, /etc, … when root is
// not "/", so functions backed by gopsutil honour [Env.Root] as the
// hand-written parsers do. With root "/" gopsutil's own defaults (and its
// HOST_PROC-style environment variables) apply.
func psutilContext(ctx context.Context, root string) context.Context {
	if root == "" || filepath.Clean(root) == "/" {
		return ctx
	}
	return context.WithValue(ctx, common.EnvKey, common.EnvMap{
		common.HostProcEnvKey: filepath.Join(root, "proc"),
		common.HostSysEnvKey:  filepath.Join(root, "sys"),
		common.HostEtcEnvKey:  filepath.Join(root, "etc"),
		common.HostVarEnvKey:  filepath.Join(root, "var"),
		common.HostRunEnvKey:  filepath.Join(root, "run"),
		common.HostDevEnvKey:  filepath.Join(root, "dev"),
	})
}

// PsutilContext is psutilContext for the agent's facts (agent/facts.go).
func PsutilContext(ctx context.Context, root string) context.Context { return psutilContext(ctx, root) }
