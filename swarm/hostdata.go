package swarm

import (
	"fmt"
	"os"
	"path/filepath"
)

// profiles are the synthetic hosts simulated agents read: the real function
// handlers run against these trees instead of the machine's own /proc, so
// a swarm shows a spread of values (some with load1 > 10) and never reads
// the real /proc 50,000 times.
var profiles = []struct {
	load1, load5, load15 float64
	running, blocked     int
}{
	{0.12, 0.30, 0.25, 1, 0}, {0.80, 0.75, 0.60, 2, 0}, {1.50, 1.20, 1.10, 3, 0},
	{3.20, 2.90, 2.40, 4, 1}, {5.00, 4.10, 3.80, 6, 0}, {7.75, 7.00, 6.20, 8, 1},
	{12.40, 11.00, 9.80, 14, 2}, {23.10, 18.50, 15.00, 25, 4},
}

// NumProfiles is how many distinct synthetic hosts a swarm has; agent i
// uses profile i % NumProfiles.
var NumProfiles = len(profiles)

// WriteHosts lays the synthetic host trees under dir/profile-N and
// returns their roots (for functions.Env.Root).
func WriteHosts(dir string) ([]string, error) {
	var roots []string
	for i, p := range profiles {
		root := filepath.Join(dir, fmt.Sprintf("profile-%d", i))
		files := map[string]string{
			"proc/loadavg": fmt.Sprintf("%.2f %.2f %.2f %d/812 4242\n", p.load1, p.load5, p.load15, p.running),
			"proc/stat": fmt.Sprintf("cpu  1000 0 500 90000 100 0 10 0 0 0\ncpu0 500 0 250 45000 50 0 5 0 0 0\ncpu1 500 0 250 45000 50 0 5 0 0 0\n"+
				"intr 0\nctxt 0\nbtime 1700000000\nprocesses 4242\nprocs_running %d\nprocs_blocked %d\n", p.running, p.blocked),
			"proc/pressure/cpu":    "some avg10=1.00 avg60=0.80 avg300=0.50 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
			"proc/pressure/memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
			"proc/pressure/io":     "some avg10=0.10 avg60=0.05 avg300=0.01 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
			"var/lib/dpkg/status": "Package: simulated-base\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\nMaintainer: commandcontrol swarm <swarm@localhost>\n\n" +
				"Package: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.19-1~deb12u2\nMaintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>\n",
		}
		for name, body := range files {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				return nil, err
			}
		}
		roots = append(roots, root)
	}
	return roots, nil
}
