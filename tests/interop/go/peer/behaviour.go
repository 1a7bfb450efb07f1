package main

// The behaviour contract shared by this peer's server and the Python test server
// (tests/interop/pyserver.py), so that either client scenario runs against either server.
//
// A request chooses what the handler does through these keys: in CreateVM they are
// annotations prefixed with "peer." (e.g. "peer.sleep-ms"); in grpc.Health Check and
// Version they are a URL query string in CheckRequest.service (e.g. "sleep-ms=50").
//
//	sleep-ms        sleep this long first, returning early with the context's error
//	                (DEADLINE_EXCEEDED) if the call's deadline passes
//	status-code     then fail with this gRPC status code ...
//	status-message  ... and this message
//	response-bytes  pad the report so the response payload is at least this many bytes
//
// CreateVMResponse.agentSocketPath and VersionCheckResponse.agent_version carry a JSON
// report: {"id", "metadata", "deadline_ms", "pad"}; metadata is the request metadata as the
// handler saw it, deadline_ms the time left until the call's deadline when the handler
// started (null without a deadline).

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const annotationPrefix = "peer."

type behaviour struct {
	sleep         time.Duration
	code          codes.Code
	message       string
	responseBytes int
}

func parseBehaviour(get func(key string) string) (behaviour, error) {
	var b behaviour
	number := func(key string) (int, error) {
		raw := get(key)
		if raw == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			return 0, status.Errorf(codes.InvalidArgument, "peer: %s=%q is not a non-negative integer", key, raw)
		}
		return n, nil
	}
	ms, err := number("sleep-ms")
	if err != nil {
		return b, err
	}
	b.sleep = time.Duration(ms) * time.Millisecond
	code, err := number("status-code")
	if err != nil {
		return b, err
	}
	b.code = codes.Code(code)
	b.message = get("status-message")
	if b.responseBytes, err = number("response-bytes"); err != nil {
		return b, err
	}
	return b, nil
}

// run sleeps (honouring the deadline) and then returns the chosen status, if any.
func (b behaviour) run(ctx context.Context) error {
	if b.sleep > 0 {
		timer := time.NewTimer(b.sleep)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.code != codes.OK {
		return status.Error(b.code, b.message)
	}
	return nil
}

type report struct {
	ID         string              `json:"id"`
	Metadata   map[string][]string `json:"metadata"`
	DeadlineMS *float64            `json:"deadline_ms"`
	Pad        string              `json:"pad,omitempty"`
}

// observe records what the handler sees of the call before it runs.
func observe(ctx context.Context, id string) report {
	r := report{ID: id, Metadata: map[string][]string{}}
	if md, ok := ttrpc.GetMetadata(ctx); ok {
		for k, v := range md {
			r.Metadata[k] = append([]string(nil), v...)
		}
	}
	if deadline, ok := ctx.Deadline(); ok {
		left := float64(time.Until(deadline)) / float64(time.Millisecond)
		r.DeadlineMS = &left
	}
	return r
}

// encode renders the report, padded so the enclosing message reaches responseBytes.
func (r report) encode(responseBytes int) (string, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	if missing := responseBytes - len(raw); missing > 0 {
		r.Pad = strings.Repeat("x", missing)
		if raw, err = json.Marshal(r); err != nil {
			return "", err
		}
	}
	return string(raw), nil
}

func describeError(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	if st, ok := status.FromError(err); ok {
		return int(st.Code()), st.Message()
	}
	return -1, fmt.Sprint(err)
}
