package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/containerd/ttrpc"

	"peerpods/interop/aa"
	"peerpods/interop/cdh"
)

// guestResult is what `ttrpc-peer guest` prints: the reply bytes, or the call's error.
type guestResult struct {
	Call    string   `json:"call"`
	Reply   []byte   `json:"reply"` // base64 in JSON
	Tee     string   `json:"tee,omitempty"`
	Outcome *outcome `json:"outcome"`
}

// runGuest makes one call to the guest components with stubs generated from the same
// protos: get-resource (api.GetResourceService/GetResource), get-token and get-tee-type
// (attestation_agent.AttestationAgentService).
func runGuest(address, call, arg string) error {
	conn, err := dial(address)
	if err != nil {
		return err
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	result := guestResult{Call: call}
	switch call {
	case "get-resource":
		reply, err := cdh.NewGetResourceServiceClient(client).GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: arg})
		if err == nil {
			result.Reply = reply.Resource
		}
		result.Outcome = outcomeOf(err)
	case "get-token":
		reply, err := aa.NewAttestationAgentServiceClient(client).GetToken(ctx, &aa.GetTokenRequest{TokenType: arg})
		if err == nil {
			result.Reply = reply.Token
		}
		result.Outcome = outcomeOf(err)
	case "get-tee-type":
		reply, err := aa.NewAttestationAgentServiceClient(client).GetTeeType(ctx, &aa.GetTeeTypeRequest{})
		if err == nil {
			result.Tee = reply.Tee
		}
		result.Outcome = outcomeOf(err)
	default:
		usage()
	}
	return json.NewEncoder(os.Stdout).Encode(result)
}
