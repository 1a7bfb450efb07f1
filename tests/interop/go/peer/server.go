package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"

	"peerpods/interop/health"
	"peerpods/interop/hypervisor"
)

// events prints one JSON line per hypervisor call when enabled; stdout is shared.
type events struct {
	enabled bool
	mu      sync.Mutex
	out     *bufio.Writer
}

func (e *events) emit(v interface{}) {
	raw, err := json.Marshal(v)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out.Write(raw)
	e.out.WriteByte('\n')
	e.out.Flush()
}

type callEvent struct {
	Event     string              `json:"event"`
	Service   string              `json:"service"`
	Method    string              `json:"method"`
	ID        string              `json:"id"`
	Metadata  map[string][]string `json:"metadata"`
	Deadline  *float64            `json:"deadline_ms"`
	Code      int                 `json:"code"`
	Message   string              `json:"message"`
	ElapsedMS float64             `json:"elapsed_ms"`
}

type hypervisorService struct{ events *events }

func ttrpcCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

func (s *hypervisorService) record(method string, r report, started time.Time, err error) {
	if !s.events.enabled {
		return
	}
	code, message := describeError(err)
	if code < 0 {
		// what the ttrpc server will answer for a plain error (its convertCode)
		code = int(ttrpcCode(err))
	}
	s.events.emit(callEvent{
		Event: "call", Service: "hypervisor.Hypervisor", Method: method, ID: r.ID,
		Metadata: r.Metadata, Deadline: r.DeadlineMS, Code: code, Message: message,
		ElapsedMS: float64(time.Since(started)) / float64(time.Millisecond),
	})
}

func (s *hypervisorService) CreateVM(ctx context.Context, req *hypervisor.CreateVMRequest) (resp *hypervisor.CreateVMResponse, err error) {
	started := time.Now()
	r := observe(ctx, req.Id)
	defer func() { s.record("CreateVM", r, started, err) }()
	b, err := parseBehaviour(func(key string) string { return req.Annotations[annotationPrefix+key] })
	if err != nil {
		return nil, err
	}
	if err := b.run(ctx); err != nil {
		return nil, err
	}
	text, err := r.encode(b.responseBytes)
	if err != nil {
		return nil, err
	}
	return &hypervisor.CreateVMResponse{AgentSocketPath: text}, nil
}

func (s *hypervisorService) StartVM(ctx context.Context, req *hypervisor.StartVMRequest) (*hypervisor.StartVMResponse, error) {
	s.record("StartVM", observe(ctx, req.Id), time.Now(), nil)
	return &hypervisor.StartVMResponse{}, nil
}

func (s *hypervisorService) StopVM(ctx context.Context, req *hypervisor.StopVMRequest) (*hypervisor.StopVMResponse, error) {
	s.record("StopVM", observe(ctx, req.Id), time.Now(), nil)
	return &hypervisor.StopVMResponse{}, nil
}

func (s *hypervisorService) Version(ctx context.Context, req *hypervisor.VersionRequest) (*hypervisor.VersionResponse, error) {
	return &hypervisor.VersionResponse{Version: "0.0.0"}, nil
}

type healthService struct{}

func healthBehaviour(req *health.CheckRequest) (behaviour, error) {
	query, err := url.ParseQuery(req.Service)
	if err != nil {
		return behaviour{}, fmt.Errorf("peer: bad CheckRequest.service %q: %w", req.Service, err)
	}
	return parseBehaviour(query.Get)
}

func (healthService) Check(ctx context.Context, req *health.CheckRequest) (*health.HealthCheckResponse, error) {
	if req.Service != "" {
		b, err := healthBehaviour(req)
		if err != nil {
			return nil, err
		}
		if err := b.run(ctx); err != nil {
			return nil, err
		}
	}
	return &health.HealthCheckResponse{Status: health.HealthCheckResponse_SERVING}, nil
}

func (healthService) Version(ctx context.Context, req *health.CheckRequest) (*health.VersionCheckResponse, error) {
	r := observe(ctx, "")
	b, err := healthBehaviour(req)
	if err != nil {
		return nil, err
	}
	if err := b.run(ctx); err != nil {
		return nil, err
	}
	text, err := r.encode(b.responseBytes)
	if err != nil {
		return nil, err
	}
	return &health.VersionCheckResponse{GrpcVersion: "ttrpc-go", AgentVersion: text}, nil
}

func listen(address string) (net.Listener, error) {
	network, addr, err := splitAddress(address)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.Remove(addr); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	return net.Listen(network, addr)
}

func runServer(address string, withEvents, exitOnEOF bool) error {
	server, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	ev := &events{enabled: withEvents, out: bufio.NewWriter(os.Stdout)}
	hypervisor.RegisterHypervisorService(server, &hypervisorService{events: ev})
	health.RegisterHealthService(server, healthService{})

	listener, err := listen(address)
	if err != nil {
		return err
	}
	ready := "ready unix:" + listener.Addr().String()
	if listener.Addr().Network() == "tcp" {
		ready = "ready tcp:" + listener.Addr().String()
	}
	ev.mu.Lock()
	fmt.Fprintln(ev.out, ready)
	ev.out.Flush()
	ev.mu.Unlock()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	if exitOnEOF {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(context.Background(), listener) }()
	select {
	case err := <-served:
		if err != nil && err != ttrpc.ErrServerClosed {
			return err
		}
	case <-stop:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			server.Close()
		}
	}
	if network, addr, _ := splitAddress(address); network == "unix" {
		os.Remove(addr)
	}
	return nil
}
