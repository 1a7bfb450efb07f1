// Parses cloud-config texts the way upstream's process-user-data does (gopkg.in/yaml.v2
// UnmarshalStrict into write_files [{path, content}]) and prints the outcome as JSON.
//
// stdin: a JSON array of texts. stdout: a JSON array of {"files": [...], "err": "..."}.
package main

import (
	"encoding/json"
	"os"

	yaml "gopkg.in/yaml.v2"
)

type writeFile struct {
	Path    string `yaml:"path"`
	Content string `yaml:"content"`
}

type cloudConfig struct {
	WriteFiles []writeFile `yaml:"write_files"`
}

type outcome struct {
	Files []map[string]string `json:"files"`
	Err   string              `json:"err"`
}

func main() {
	var texts []string
	if err := json.NewDecoder(os.Stdin).Decode(&texts); err != nil {
		panic(err)
	}
	results := make([]outcome, 0, len(texts))
	for _, text := range texts {
		var cc cloudConfig
		result := outcome{Files: []map[string]string{}}
		if err := yaml.UnmarshalStrict([]byte(text), &cc); err != nil {
			result.Err = err.Error()
		} else {
			for _, f := range cc.WriteFiles {
				result.Files = append(result.Files, map[string]string{"path": f.Path, "content": f.Content})
			}
		}
		results = append(results, result)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		panic(err)
	}
}
