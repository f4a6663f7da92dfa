package controlsvc

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestReview16FoldLosesOtherAddresses: repeats of a refusal (same name,
// key and reason) are folded into one record that keeps the last
// address only. The deny list is checked before the nonce's signature
// (callout.go), so anyone can present a denied key under the denied
// host's name and get the very refusal the host gets: an attacker's
// attempts from another address then fold into the host's record and
// that address is written nowhere (or, last, replaces the host's).
func TestReview16FoldLosesOtherAddresses(t *testing.T) {
	t0 := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := t0
	a, _, _, _ := startAuditLog(t, 1000, func() time.Time { return clock })
	refuse := func(d time.Duration, ip string) {
		clock = t0.Add(d)
		a.refused(fleet.AuditRecord{Kind: fleet.AuditRefused, Name: "10.0.0.9_gone", Key: "UKEY1", IP: ip, Reason: "agent: key UKEY1 is on the deny list"})
	}
	refuse(0, "192.0.2.1")               // the removed host, retrying
	refuse(time.Second, "198.51.100.66") // someone else, presenting its key unsigned
	refuse(2*time.Second, "192.0.2.1")   // the host again
	a.start()
	a.close()
	got, err := a.query(t.Context(), fleet.AuditRequest{Logs: []string{fleet.AuditLogRefused}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got.Records {
		if r.IP == "198.51.100.66" {
			return
		}
	}
	t.Fatalf("a refusal from 198.51.100.66 is recorded nowhere: the audit holds %+v", got.Records)
}
