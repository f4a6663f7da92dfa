package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The audit log is the JetStream stream AuditStream in the CONTROL
// account, file storage, on subjects cc.audit.<kind>. Nobody in FLEET can
// reach it: that account has no JetStream and no import of it.
const (
	AuditStream        = "CC_AUDIT"
	AuditSubjectPrefix = "cc.audit."
	// AuditMaxBytes bounds the stream; the oldest records go first.
	AuditMaxBytes = 1 << 30
	// auditQueue bounds the records waiting to be written; past it they
	// are counted as dropped, so a flood never blocks the callout.
	auditQueue = 1 << 14
	// auditReplyBytes bounds one OpAudit reply (the broker's payload
	// limit is 1 MiB).
	auditReplyBytes = 768 << 10
	auditMaxLimit   = 10000
)

// auditLog writes audit records to the stream from one goroutine, in
// order. Without JetStream (an external broker started without
// --store-dir) the records go to the service's log only, and it says so.
type auditLog struct {
	log     *slog.Logger
	js      jetstream.JetStream // nil: not durable
	ch      chan fleet.AuditRecord
	dropped atomic.Int64
	done    chan struct{}
	once    sync.Once
}

// openAuditLog creates (or opens) the audit stream through nc, a CONTROL
// account connection.
func openAuditLog(ctx context.Context, nc *nats.Conn, log *slog.Logger) *auditLog {
	a := &auditLog{log: log, ch: make(chan fleet.AuditRecord, auditQueue), done: make(chan struct{})}
	js, err := jetstream.New(nc)
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
			Name:        AuditStream,
			Description: "commandcontrol audit log: calls, registry changes, refused connections",
			Subjects:    []string{AuditSubjectPrefix + ">"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxBytes:    AuditMaxBytes,
		})
		cancel()
	}
	if err != nil {
		log.Warn("the audit log is NOT durable: the broker has no JetStream for the CONTROL account; "+
			"records go to this log only (start cc-broker with --store-dir)", "error", err)
	} else {
		a.js = js
	}
	go a.run()
	return a
}

// record queues r; it never blocks.
func (a *auditLog) record(r fleet.AuditRecord) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	select {
	case a.ch <- r:
	default:
		a.dropped.Add(1)
	}
}

func (a *auditLog) run() {
	defer close(a.done)
	for r := range a.ch {
		if n := a.dropped.Swap(0); n > 0 {
			a.write(fleet.AuditRecord{Time: time.Now().UTC(), Kind: fleet.AuditDropped, Dropped: int(n)})
		}
		a.write(r)
	}
}

func (a *auditLog) write(r fleet.AuditRecord) {
	b, err := json.Marshal(r)
	if err != nil {
		a.log.Error("audit record not encodable", "kind", r.Kind, "error", err)
		return
	}
	if a.js == nil {
		a.log.Info("audit", "record", string(b))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.js.Publish(ctx, AuditSubjectPrefix+r.Kind, b); err != nil {
		a.log.Error("audit record not stored; logged instead", "error", err, "record", string(b))
	}
}

// close writes what is queued and stops.
func (a *auditLog) close() {
	a.once.Do(func() { close(a.ch) })
	<-a.done
}

// query reads records matching req, oldest first.
func (a *auditLog) query(ctx context.Context, req fleet.AuditRequest) (fleet.AuditList, error) {
	out := fleet.AuditList{Records: []fleet.AuditRecord{}}
	if a.js == nil {
		return out, fleet.Errorf(fleet.CodeUnavailable, "the audit log is not durable here: the broker has no JetStream (start cc-broker with --store-dir); records are in cc-control's log")
	}
	limit := req.Limit
	if limit <= 0 || limit > auditMaxLimit {
		limit = auditMaxLimit
	}
	st, err := a.js.Stream(ctx, AuditStream)
	if err != nil {
		return out, fmt.Errorf("audit stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return out, fmt.Errorf("audit stream: %w", err)
	}
	if info.State.Msgs == 0 || info.State.LastSeq <= req.AfterSeq {
		return out, nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case req.AfterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, req.AfterSeq+1
	case !req.Since.IsZero():
		since := req.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := a.js.OrderedConsumer(ctx, AuditStream, cfg)
	if err != nil {
		return out, fmt.Errorf("audit stream: %w", err)
	}
	size := 0
	for {
		batch, err := cons.Fetch(min(limit-len(out.Records)+1, 500), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return out, fmt.Errorf("audit stream: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if len(out.Records) == limit || size+len(m.Data()) > auditReplyBytes {
				out.More = true
				return out, nil
			}
			var r fleet.AuditRecord
			if json.Unmarshal(m.Data(), &r) != nil {
				continue
			}
			r.Seq = md.Sequence.Stream
			if !req.Since.IsZero() && r.Time.Before(req.Since) {
				continue
			}
			out.Records = append(out.Records, r)
			size += len(m.Data())
			if md.NumPending == 0 {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return out, fmt.Errorf("audit stream: %w", err)
		}
		if got == 0 {
			return out, nil
		}
	}
}

// truncateJSON keeps body as JSON when it is valid and short enough, and
// otherwise records it as a JSON string cut to max bytes.
func truncateJSON(body []byte, max int) json.RawMessage {
	if len(body) == 0 {
		return nil
	}
	if len(body) <= max && json.Valid(body) {
		return json.RawMessage(append([]byte(nil), body...))
	}
	s := string(body)
	if len(s) > max {
		s = s[:max] + "…(truncated)"
	}
	b, _ := json.Marshal(s)
	return b
}

// auditRefused records a connection the callout refused.
func (s *Service) auditRefused(kind, name, key, ip, reason string) {
	if s.audit == nil {
		return
	}
	s.audit.record(fleet.AuditRecord{Kind: fleet.AuditRefused, Name: name, Key: key, IP: ip, Reason: kind + ": " + reason})
}

// auditRegistry records a control API change (or a refused attempt).
// note says what it did beyond the request ("" when nothing).
func (s *Service) auditRegistry(op operatorIdentity, name string, body []byte, err error, note string) {
	if s.audit == nil {
		return
	}
	s.audit.record(fleet.AuditRecord{Kind: fleet.AuditRegistry, Operator: op.Name, OperatorKey: op.Key,
		Op: name, Request: truncateJSON(body, fleet.AuditMaxArgs), Note: note, Error: errString(err)})
}

// apiAudit answers OpAudit.
func (s *Service) apiAudit(ctx context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.AuditRequest
	if len(body) > 0 {
		if err := decode(body, &r); err != nil {
			return nil, err
		}
	}
	if s.audit == nil {
		return nil, fleet.Errorf(fleet.CodeUnavailable, "the audit log is not open")
	}
	return s.audit.query(ctx, r)
}
