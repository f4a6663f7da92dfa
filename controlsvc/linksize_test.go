package controlsvc

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// TestSiteLinkTooLarge (review 2, F7): a site whose machines' subjects
// make the FLEET link's callout response larger than the broker's max
// payload (the default 1 MiB) is refused with an ERROR naming the site,
// its machine count and the limit, and an audit record saying what to do;
// before, the response could not be sent and the link never came up with
// nothing said. A smaller site's link is authorised and its response
// fits. The ERROR and the audit are repeated once a minute at most.
func TestSiteLinkTooLarge(t *testing.T) {
	const maxPayload = 1 << 20 // nats-server's default
	f := newCalloutFixture(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	f.c.sites = map[string]string{"big": string(hash), "small": string(hash)}
	f.c.linkSize = newLinkSize(func() int64 { return maxPayload })
	now := calloutTime
	f.c.now = func() time.Time { return now }
	var logs bytes.Buffer
	f.c.log = slog.New(slog.NewTextHandler(&logs, nil))
	var audits []string
	f.c.onAudit = func(kind, who, key, ip, _, reason string) { audits = append(audits, kind+" "+who+": "+reason) }

	_, pub := newUser(t)
	var reqs []fleet.MachineRequest
	const big, small = 7000, 100
	for i := range big + small {
		site := "big"
		if i >= big {
			site = "small"
		}
		reqs = append(reqs, fleet.MachineRequest{ID: fmt.Sprintf("10.%d.%d.%d_web-%05d", 100+i/65536, (i/256)%256, i%256, i), Key: pub, Site: site})
	}
	if _, err := f.reg.AddMachines(reqs, "test"); err != nil {
		t.Fatal(err)
	}
	link := func(site string) *jwt.AuthorizationRequestClaims {
		req := rawRequest(t, "", "site-"+site, "", "")
		req.ConnectOptions.Username, req.ConnectOptions.Password = site+".fleet", "s3cret"
		req.ClientInformation.Kind = leafKind
		return req
	}

	// The small site: authorised, and the response the broker gets fits.
	if _, err := f.c.decideAt(link("small"), ""); err != nil {
		t.Fatalf("a site of %d machines: %v", small, err)
	}
	if out, err := f.c.authorize(encodeRequest(t, link("small")), ""); err != nil || len(out) > maxPayload {
		t.Fatalf("a site of %d machines: a %d-byte response (%v), want at most %d", small, len(out), err, maxPayload)
	}

	// The big site: refused, with the reason in an ERROR and the audit.
	_, err := f.c.decideAt(link("big"), "")
	if err == nil {
		t.Fatalf("a site of %d machines was authorised with a response past the %d-byte max payload", big, maxPayload)
	}
	for _, want := range []string{"site big", "its 7000 machines", "max payload of 1048576 bytes", "Split the site"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	line := logs.String()
	for _, want := range []string{"level=ERROR", "site=big", "machines=7000", "max_payload=1048576", "fix="} {
		if !strings.Contains(line, want) {
			t.Errorf("log %q lacks %q", line, want)
		}
	}
	if len(audits) != 1 || !strings.Contains(audits[0], "site big") || !strings.Contains(audits[0], "7000 machines") {
		t.Fatalf("audit records: %q, want one naming the site and its machine count", audits)
	}
	// What the broker would have got: more than it accepts.
	f.c.linkSize = nil
	if out, err := f.c.authorize(encodeRequest(t, link("big")), ""); err != nil || len(out) <= maxPayload {
		t.Fatalf("unchecked, the big site's response is %d bytes (%v): the test's site is not too large", len(out), err)
	}
	f.c.linkSize = newLinkSize(func() int64 { return maxPayload })
	f.c.linkSize.logged["big"] = now

	// Retries within the minute: refused, no new ERROR or audit record.
	logs.Reset()
	if _, err := f.c.decideAt(link("big"), ""); err == nil {
		t.Fatal("the retry was authorised")
	}
	if strings.Contains(logs.String(), "level=ERROR") || len(audits) != 1 {
		t.Fatalf("a retry within the minute logged %q and audited %d times", logs.String(), len(audits))
	}
	now = now.Add(linkSizeLogEvery)
	if _, err := f.c.decideAt(link("big"), ""); err == nil || !strings.Contains(logs.String(), "level=ERROR") || len(audits) != 2 {
		t.Fatalf("a minute later: %v, log %q, %d audit records; want the ERROR and a record again", err, logs.String(), len(audits))
	}
}

// encodeRequest signs req as a broker would send it to the callout.
func encodeRequest(t *testing.T, req *jwt.AuthorizationRequestClaims) []byte {
	t.Helper()
	srv, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := req.Encode(srv)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok)
}
