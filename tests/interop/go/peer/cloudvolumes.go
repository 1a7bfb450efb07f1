package main

// cloud-volumes-json: read a JSON list of {"key", "volume"} from stdin and print
// json.Marshal of the map[string]CloudVolumeAnnotation they make, as upstream's agent proxy
// encodes the io.confidentialcontainers.org.cloud_volumes annotation.

import (
	"encoding/json"
	"io"
	"os"
)

// CloudVolumeAnnotation has the fields, order and tags of upstream's
// util.CloudVolumeAnnotation (src/cloud-api-adaptor/pkg/util/cloud.go).
type CloudVolumeAnnotation struct {
	MountPoint  string `json:"mount_point"`
	FSType      string `json:"fs_type"`
	LUN         string `json:"lun"`
	DiskID      string `json:"disk_id"`
	FSGroup     string `json:"fs_group,omitempty"`
	EncryptType string `json:"encrypt_type,omitempty"`
	KeyID       string `json:"key_id,omitempty"`
}

type cloudVolumeEntry struct {
	Key    string                `json:"key"`
	Volume CloudVolumeAnnotation `json:"volume"`
}

func runCloudVolumesJSON() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("cloud-volumes-json: %v", err)
	}
	var entries []cloudVolumeEntry
	if err := json.Unmarshal(input, &entries); err != nil {
		fail("cloud-volumes-json: %v", err)
	}
	volumes := make(map[string]CloudVolumeAnnotation)
	for _, e := range entries {
		volumes[e.Key] = e.Volume
	}
	out, err := json.Marshal(volumes)
	if err != nil {
		fail("cloud-volumes-json: %v", err)
	}
	_, _ = os.Stdout.Write(out)
}
