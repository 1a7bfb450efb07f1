package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"

	"peerpods/interop/health"
	"peerpods/interop/hypervisor"
)

// messageLengthMax is ttrpc's frame limit (4 MiB).
const messageLengthMax = 4 << 20

type outcome struct {
	Code    *int   `json:"code"` // gRPC status code, null when the error carries none
	Message string `json:"message"`
	Error   string `json:"error"`
}

func outcomeOf(err error) *outcome {
	if err == nil {
		return nil
	}
	code, message := describeError(err)
	o := &outcome{Message: message, Error: err.Error()}
	if code >= 0 {
		o.Code = &code
	}
	return o
}

type peerClient struct {
	raw *ttrpc.Client
	hv  hypervisor.HypervisorService
	hc  health.HealthService
}

func connect(address string) (*peerClient, error) {
	conn, err := dial(address)
	if err != nil {
		return nil, err
	}
	raw := ttrpc.NewClient(conn)
	return &peerClient{raw: raw, hv: hypervisor.NewHypervisorClient(raw), hc: health.NewHealthClient(raw)}, nil
}

// createVM calls CreateVM with the behaviour annotations and decodes the JSON report.
func (c *peerClient) createVM(ctx context.Context, id string, behaviour map[string]string) (*report, error) {
	annotations := map[string]string{}
	for k, v := range behaviour {
		annotations[annotationPrefix+k] = v
	}
	resp, err := c.hv.CreateVM(ctx, &hypervisor.CreateVMRequest{Id: id, Annotations: annotations})
	if err != nil {
		return nil, err
	}
	var r report
	if err := json.Unmarshal([]byte(resp.AgentSocketPath), &r); err != nil {
		return nil, fmt.Errorf("undecodable report %.80q: %w", resp.AgentSocketPath, err)
	}
	return &r, nil
}

// healthy reports whether a plain Health/Check still succeeds on this connection.
func (c *peerClient) healthy() *outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.hc.Check(ctx, &health.CheckRequest{})
	if err == nil && resp.Status != health.HealthCheckResponse_SERVING {
		err = fmt.Errorf("health status %v", resp.Status)
	}
	if err != nil {
		return outcomeOf(err)
	}
	return &outcome{Code: new(int)}
}

func runClient(address, scenario string, calls, timeoutMS int) error {
	c, err := connect(address)
	if err != nil {
		return err
	}
	defer c.raw.Close()
	result := map[string]interface{}{"scenario": scenario}
	switch scenario {
	case "concurrent":
		scenarioConcurrent(c, calls, result)
	case "error":
		scenarioError(c, result)
	case "deadline":
		scenarioDeadline(c, timeoutMS, result)
	case "oversize":
		scenarioOversize(c, address, result)
	case "oversize-response":
		scenarioOversizeResponse(c, result)
	case "metadata":
		scenarioMetadata(c, result)
	case "bench":
		scenarioBench(c, calls, result)
	default:
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	out, err := json.Marshal(result)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// concurrent: many CreateVM calls on one connection; call i sleeps (n-i)*3 ms on the server,
// so later calls finish first. Each response is checked against its request id.
func scenarioConcurrent(c *peerClient, n int, result map[string]interface{}) {
	if n <= 0 {
		n = 100
	}
	type callResult struct {
		ID      string   `json:"id"`
		Echoed  string   `json:"echoed"`
		Rank    int      `json:"rank"`
		Outcome *outcome `json:"error"`
	}
	results := make([]callResult, n)
	var finished int32
	var wg sync.WaitGroup
	started := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			id := fmt.Sprintf("call-%03d", i)
			r, err := c.createVM(ctx, id, map[string]string{"sleep-ms": strconv.Itoa((n - i) * 3)})
			res := callResult{ID: id, Outcome: outcomeOf(err)}
			if r != nil {
				res.Echoed = r.ID
			}
			res.Rank = int(atomic.AddInt32(&finished, 1)) - 1
			results[i] = res
		}(i)
	}
	wg.Wait()
	ok, matched := 0, 0
	order := make([]int, n)
	for i, r := range results {
		if r.Outcome == nil {
			ok++
		}
		if r.Echoed == r.ID {
			matched++
		}
		order[r.Rank] = i
	}
	result["calls"] = n
	result["ok"] = ok
	result["matched"] = matched
	result["completion_order"] = order
	result["out_of_order"] = !sort.IntsAreSorted(order)
	result["elapsed_ms"] = float64(time.Since(started)) / float64(time.Millisecond)
	result["results"] = results
}

// error: a chosen status, and the server's answer to an unknown method and service.
func scenarioError(c *peerClient, result map[string]interface{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.createVM(ctx, "err", map[string]string{
		"status-code":    "5",
		"status-message": "peer: sandbox \"sb-ø\" not found",
	})
	result["status"] = outcomeOf(err)
	var resp hypervisor.VersionResponse
	err = c.raw.Call(ctx, "hypervisor.Hypervisor", "NoSuchMethod", &hypervisor.VersionRequest{}, &resp)
	result["unknown_method"] = outcomeOf(err)
	err = c.raw.Call(ctx, "no.SuchService", "Check", &health.CheckRequest{}, &resp)
	result["unknown_service"] = outcomeOf(err)
	_, err = c.hc.Check(ctx, &health.CheckRequest{Service: "status-code=13&status-message=health+failed"})
	result["health_status"] = outcomeOf(err)
	result["after"] = c.healthy()
}

// deadline: what the handler sees of a deadline, and what an expiring one does.
func scenarioDeadline(c *peerClient, timeoutMS int, result map[string]interface{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	r, err := c.createVM(ctx, "seen", nil)
	cancel()
	if err != nil {
		result["seen_error"] = outcomeOf(err)
	} else {
		result["seen_deadline_ms"] = r.DeadlineMS
	}
	r, err = c.createVM(context.Background(), "none", nil)
	if err != nil {
		result["none_error"] = outcomeOf(err)
	} else {
		result["none_deadline_ms"] = r.DeadlineMS
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Duration(timeoutMS)*time.Millisecond)
	started := time.Now()
	_, err = c.createVM(ctx, "expire", map[string]string{"sleep-ms": "5000"})
	cancel()
	result["timeout_ms"] = timeoutMS
	result["expired"] = outcomeOf(err)
	result["expired_is_context_deadline"] = errors.Is(err, context.DeadlineExceeded)
	result["expired_elapsed_ms"] = float64(time.Since(started)) / float64(time.Millisecond)
	result["after"] = c.healthy()
}

// oversize: a request over 4 MiB (this ttrpc version sends it; the server must answer
// RESOURCE_EXHAUSTED on that stream and keep the connection), then a response over 4 MiB,
// checked in a child process because this ttrpc client version may crash on one.
func scenarioOversize(c *peerClient, address string, result map[string]interface{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pad := strings.Repeat("x", messageLengthMax+1024)
	_, err := c.createVM(ctx, "big-request", map[string]string{"pad": pad})
	result["request_bytes"] = len(pad)
	result["request"] = outcomeOf(err)
	result["after_request"] = c.healthy()

	child := exec.Command(os.Args[0], "client", "--address", address, "--scenario", "oversize-response")
	var stdout, stderr bytes.Buffer
	child.Stdout, child.Stderr = &stdout, &stderr
	runErr := child.Run()
	response := map[string]interface{}{"exit_code": child.ProcessState.ExitCode()}
	if runErr == nil {
		var inner map[string]interface{}
		if err := json.Unmarshal(stdout.Bytes(), &inner); err == nil {
			response["result"] = inner
		}
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(line, "panic:") {
			response["panic"] = line
			break
		}
	}
	result["response"] = response
}

func scenarioOversizeResponse(c *peerClient, result map[string]interface{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	size := messageLengthMax + 1024
	r, err := c.createVM(ctx, "big-response", map[string]string{"response-bytes": strconv.Itoa(size)})
	result["response_bytes"] = size
	result["error"] = outcomeOf(err)
	if r != nil {
		result["received_pad_bytes"] = len(r.Pad)
	}
	result["after"] = c.healthy()
}

// metadata: send metadata (Go lower-cases keys) and report what the handler saw.
func scenarioMetadata(c *peerClient, result map[string]interface{}) {
	md := ttrpc.MD{}
	md.Set("x-peer-one", "1")
	md.Set("X-Peer-Case", "Mixed Value")
	md.Append("x-peer-multi", "a", "b")
	ctx, cancel := context.WithTimeout(ttrpc.WithMetadata(context.Background(), md), 10*time.Second)
	defer cancel()
	result["sent"] = md
	r, err := c.createVM(ctx, "metadata", nil)
	if err != nil {
		result["error"] = outcomeOf(err)
	} else {
		result["echoed"] = r.Metadata
	}
	v, err := c.hc.Version(ctx, &health.CheckRequest{})
	if err != nil {
		result["health_error"] = outcomeOf(err)
	} else {
		var hr report
		if err := json.Unmarshal([]byte(v.AgentVersion), &hr); err == nil {
			result["health_echoed"] = hr.Metadata
		}
	}
}

// bench: sequential Health/Check round trips without a deadline.
func scenarioBench(c *peerClient, n int, result map[string]interface{}) {
	if n <= 0 {
		n = 10000
	}
	ctx := context.Background()
	req := &health.CheckRequest{}
	for i := 0; i < n/20+10; i++ { // warm up
		if _, err := c.hc.Check(ctx, req); err != nil {
			result["error"] = outcomeOf(err)
			return
		}
	}
	samples := make([]time.Duration, n)
	started := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, err := c.hc.Check(ctx, req); err != nil {
			result["error"] = outcomeOf(err)
			return
		}
		samples[i] = time.Since(t)
	}
	total := time.Since(started)
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	result["calls"] = n
	result["p50_us"] = us(samples[n/2])
	result["p99_us"] = us(samples[(n*99)/100])
	result["calls_per_s"] = float64(n) / total.Seconds()
}
