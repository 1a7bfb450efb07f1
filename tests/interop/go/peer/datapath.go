package main

// The data-path benchmark modes (benchmarks/datapath_bench.py):
//
//	ttrpc-peer agent-bench-server --address ...   grpc.Health/Check, grpc.AgentService/ReadStdout
//	                                              (Len bytes back) and WaitProcess (blocks)
//	ttrpc-peer relay --address ... --upstream ... a byte relay: one upstream connection per
//	                                              accepted connection, bytes copied both ways;
//	                                              --listen-tls DIR serves mutual TLS (DIR/server.crt,
//	                                              server.key, clients signed by DIR/client.crt),
//	                                              --upstream-tls DIR dials with it (DIR/client.crt,
//	                                              client.key, server checked against DIR/ca.crt
//	                                              as --server-name); Go's default TLS settings
//	ttrpc-peer datapath-client --address ...      the measurements, one JSON object on stdout
//
// Payloads are handled as raw protobuf bytes, so no agent.proto stubs are needed.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
)

// rawMessage is a protobuf message kept as its encoded bytes.
type rawMessage struct{ data []byte }

func (m *rawMessage) Reset()                   { m.data = m.data[:0] }
func (m *rawMessage) String() string           { return "raw" }
func (m *rawMessage) ProtoMessage()            {}
func (m *rawMessage) Marshal() ([]byte, error) { return m.data, nil }
func (m *rawMessage) Unmarshal(b []byte) error { m.data = append(m.data[:0], b...); return nil }

// readLen reads field 3 (ReadStreamRequest.len, varint) from an encoded message.
func readLen(b []byte) uint64 {
	for i := 0; i < len(b); {
		key, n := uvarint(b[i:])
		i += n
		switch key & 7 {
		case 0:
			v, m := uvarint(b[i:])
			i += m
			if key>>3 == 3 {
				return v
			}
		case 2:
			l, m := uvarint(b[i:])
			i += m + int(l)
		default:
			return 0
		}
	}
	return 0
}

func uvarint(b []byte) (uint64, int) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * uint(i))
		if c < 0x80 {
			return v, i + 1
		}
	}
	return v, len(b)
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func runAgentBenchServer(address string) error {
	server, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	chunk := make([]byte, 4<<20)
	server.Register("grpc.Health", map[string]ttrpc.Method{
		"Check": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req rawMessage
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return &rawMessage{data: []byte{0x08, 0x01}}, nil // status: SERVING
		},
	})
	server.Register("grpc.AgentService", map[string]ttrpc.Method{
		"ReadStdout": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req rawMessage
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			n := readLen(req.data)
			if n > uint64(len(chunk)-16) {
				n = uint64(len(chunk) - 16)
			}
			out := appendUvarint([]byte{0x0a}, n)
			return &rawMessage{data: append(out, chunk[:n]...)}, nil
		},
		"WaitProcess": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req rawMessage
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	l, err := listen(address)
	if err != nil {
		return err
	}
	return server.Serve(context.Background(), l)
}

type relayTLS struct {
	listen   *tls.Config // nil: plain
	upstream *tls.Config // nil: plain
}

func certPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", path)
	}
	return pool, nil
}

func newRelayTLS(listenDir, upstreamDir, serverName string) (relayTLS, error) {
	var cfg relayTLS
	if listenDir != "" {
		cert, err := tls.LoadX509KeyPair(listenDir+"/server.crt", listenDir+"/server.key")
		if err != nil {
			return cfg, err
		}
		clients, err := certPool(listenDir + "/client.crt")
		if err != nil {
			return cfg, err
		}
		cfg.listen = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: clients,
			ClientAuth: tls.RequireAndVerifyClientCert}
	}
	if upstreamDir != "" {
		cert, err := tls.LoadX509KeyPair(upstreamDir+"/client.crt", upstreamDir+"/client.key")
		if err != nil {
			return cfg, err
		}
		roots, err := certPool(upstreamDir + "/ca.crt")
		if err != nil {
			return cfg, err
		}
		cfg.upstream = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots,
			ServerName: serverName}
	}
	return cfg, nil
}

func runRelay(address, upstream string, cfg relayTLS) error {
	l, err := listen(address)
	if err != nil {
		return err
	}
	if cfg.listen != nil {
		l = tls.NewListener(l, cfg.listen)
	}
	for {
		down, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			up, err := dial(upstream)
			if err != nil {
				down.Close()
				return
			}
			if cfg.upstream != nil {
				up = tls.Client(up, cfg.upstream)
			}
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				done <- struct{}{}
			}
			go pipe(up, down)
			go pipe(down, up)
			<-done
			down.Close()
			up.Close()
		}()
	}
}

type datapathReport struct {
	CheckP50us       float64 `json:"check_p50_us"`
	CheckP99us       float64 `json:"check_p99_us"`
	ConcurrentP50us  float64 `json:"concurrent_p50_us"`
	ConcurrentP99us  float64 `json:"concurrent_p99_us"`
	ConcurrentWallus float64 `json:"concurrent_wall_us"`
	ReadStdoutMBps   float64 `json:"read_stdout_mb_s"`
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func percentile(samples []time.Duration, q float64) float64 {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	i := int(q * float64(len(samples)))
	if i >= len(samples) {
		i = len(samples) - 1
	}
	return micros(samples[i])
}

func check(c *ttrpc.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp rawMessage
	return c.Call(ctx, "grpc.Health", "Check", &rawMessage{}, &resp)
}

func runDatapathClient(address string, calls, rounds int) error {
	conn, err := dial(address)
	if err != nil {
		return err
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	var r datapathReport
	for i := 0; i < calls/10; i++ { // warm-up
		if err := check(c); err != nil {
			return err
		}
	}
	samples := make([]time.Duration, calls)
	for i := range samples {
		start := time.Now()
		if err := check(c); err != nil {
			return err
		}
		samples[i] = time.Since(start)
	}
	r.CheckP50us, r.CheckP99us = percentile(samples, 0.5), percentile(samples, 0.99)

	// 20 concurrent Checks while one WaitProcess blocks on the same connection.
	blockCtx, unblock := context.WithCancel(context.Background())
	blocked := make(chan error, 1)
	go func() {
		var resp rawMessage
		blocked <- c.Call(blockCtx, "grpc.AgentService", "WaitProcess", &rawMessage{}, &resp)
	}()
	var concurrent []time.Duration
	var mu sync.Mutex
	wall := time.Now()
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				if err := check(c); err != nil {
					fail("concurrent check: %v", err)
				}
				mu.Lock()
				concurrent = append(concurrent, time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	r.ConcurrentWallus = micros(time.Since(wall)) / float64(rounds)
	r.ConcurrentP50us, r.ConcurrentP99us = percentile(concurrent, 0.5), percentile(concurrent, 0.99)
	unblock()
	<-blocked

	// ReadStdout: 16 MiB in 1 MiB calls, best of a few runs.
	request := appendUvarint([]byte{0x0a, 0x01, 'c', 0x12, 0x01, 'e', 0x18}, 1<<20)
	best := 0.0
	for run := 0; run < 5; run++ {
		start := time.Now()
		total := 0
		for i := 0; i < 16; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var resp rawMessage
			err := c.Call(ctx, "grpc.AgentService", "ReadStdout", &rawMessage{data: request}, &resp)
			cancel()
			if err != nil {
				return err
			}
			total += len(resp.data)
		}
		rate := float64(total) / time.Since(start).Seconds() / 1e6
		if rate > best {
			best = rate
		}
	}
	r.ReadStdoutMBps = best
	return json.NewEncoder(os.Stdout).Encode(r)
}

// runDatapathMode parses the flags of the data-path modes and runs one.
func runDatapathMode(mode string, flags *flag.FlagSet, address *string) {
	upstream := flags.String("upstream", "", "relay: where to connect for each accepted connection")
	listenTLS := flags.String("listen-tls", "", "relay: serve mutual TLS with the PEMs in this dir")
	upstreamTLS := flags.String("upstream-tls", "", "relay: dial upstream with the PEMs in this dir")
	serverName := flags.String("server-name", "", "relay: the upstream server certificate's name")
	calls := flags.Int("calls", 5000, "datapath-client: sequential Checks")
	rounds := flags.Int("rounds", 200, "datapath-client: rounds of 20 concurrent Checks")
	_ = flags.Parse(os.Args[2:])
	if *address == "" {
		usage()
	}
	var err error
	switch mode {
	case "agent-bench-server":
		err = runAgentBenchServer(*address)
	case "relay":
		var cfg relayTLS
		if cfg, err = newRelayTLS(*listenTLS, *upstreamTLS, *serverName); err == nil {
			err = runRelay(*address, *upstream, cfg)
		}
	default:
		err = runDatapathClient(*address, *calls, *rounds)
	}
	if err != nil {
		fail("%s: %v", mode, err)
	}
}
