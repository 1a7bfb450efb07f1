// Command ttrpc-peer is containerd's Go ttrpc, wrapped as a test peer for the Python ttrpc.
//
//	ttrpc-peer server       --address unix:PATH|tcp:HOST:PORT [--events] [--exit-on-eof]
//	ttrpc-peer bench-server --address ...                      (same as server)
//	ttrpc-peer client       --address ... --scenario NAME [--calls N] [--timeout-ms N]
//	ttrpc-peer guest        --address ... --call get-resource|get-token|get-tee-type [--arg S]
//
// The server serves hypervisor.Hypervisor and grpc.Health with behaviour chosen by the
// request (see behaviour.go); the client runs one scenario and prints one JSON object.
// tests/interop/README.md documents both.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ttrpc-peer server|bench-server|client --address unix:PATH|tcp:HOST:PORT [options]")
	os.Exit(2)
}

// splitAddress turns "unix:PATH" or "tcp:HOST:PORT" into a network and an address.
func splitAddress(address string) (string, string, error) {
	switch {
	case strings.HasPrefix(address, "unix:"):
		return "unix", strings.TrimPrefix(address, "unix:"), nil
	case strings.HasPrefix(address, "tcp:"):
		return "tcp", strings.TrimPrefix(address, "tcp:"), nil
	}
	return "", "", fmt.Errorf("address %q: want unix:PATH or tcp:HOST:PORT", address)
}

func dial(address string) (net.Conn, error) {
	network, addr, err := splitAddress(address)
	if err != nil {
		return nil, err
	}
	return net.Dial(network, addr)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "ttrpc-peer: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode := os.Args[1]
	flags := flag.NewFlagSet(mode, flag.ExitOnError)
	address := flags.String("address", "", "unix:PATH or tcp:HOST:PORT")
	switch mode {
	case "server", "bench-server":
		events := flags.Bool("events", false, "print one JSON line per hypervisor.Hypervisor call")
		exitOnEOF := flags.Bool("exit-on-eof", false, "exit when stdin reaches end of file")
		_ = flags.Parse(os.Args[2:])
		if *address == "" {
			usage()
		}
		if err := runServer(*address, *events, *exitOnEOF); err != nil {
			fail("server: %v", err)
		}
	case "client":
		scenario := flags.String("scenario", "", "concurrent|error|deadline|oversize|metadata|bench")
		calls := flags.Int("calls", 0, "number of calls (concurrent: 100, bench: 10000)")
		timeoutMS := flags.Int("timeout-ms", 200, "deadline scenario: client timeout in ms")
		_ = flags.Parse(os.Args[2:])
		if *address == "" || *scenario == "" {
			usage()
		}
		if err := runClient(*address, *scenario, *calls, *timeoutMS); err != nil {
			fail("client: %v", err)
		}
	case "guest":
		call := flags.String("call", "", "get-resource|get-token|get-tee-type")
		arg := flags.String("arg", "", "resource path or token type")
		_ = flags.Parse(os.Args[2:])
		if *address == "" || *call == "" {
			usage()
		}
		if err := runGuest(*address, *call, *arg); err != nil {
			fail("guest: %v", err)
		}
	case "cloud-volumes-json":
		runCloudVolumesJSON()
	case "agent-bench-server", "relay", "datapath-client":
		runDatapathMode(mode, flags, address)
	default:
		usage()
	}
}
