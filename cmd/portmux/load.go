package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// fileData is the content of one file as it was read.
type fileData struct {
	path string
	data []byte
}

// readFiles reads every file, in order.
func readFiles(paths []string) ([]fileData, error) {
	files := make([]fileData, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		files = append(files, fileData{path: p, data: data})
	}
	return files, nil
}

// loadFiles decodes PortMux and Secret documents from the contents of YAML
// files (several documents per file, separated by ---) into compile's
// input. Unknown fields are errors: a typo must not silently drop a route.
func loadFiles(files []fileData) (compile.Input, error) {
	in := compile.Input{Secrets: map[types.NamespacedName]*corev1.Secret{}}
	for _, f := range files {
		if err := decodeDocuments(f.path, f.data, &in); err != nil {
			return in, err
		}
	}
	if len(in.PortMuxes) == 0 {
		return in, errors.New("no PortMux in the given files")
	}
	return in, nil
}

func decodeDocuments(path string, data []byte, in *compile.Input) error {
	r := utilyaml.NewYAMLReader(bufioReader(data))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		if head.Kind == "" && head.APIVersion == "" {
			continue // a comment-only document
		}
		switch {
		case head.Kind == "PortMux" && head.APIVersion == v1alpha1.GroupVersion.String():
			var pm v1alpha1.PortMux
			if err := yaml.UnmarshalStrict(doc, &pm); err != nil {
				return fmt.Errorf("%s: document %d (PortMux): %w", path, n, err)
			}
			for _, other := range in.PortMuxes {
				if other.Namespace == pm.Namespace && other.Name == pm.Name {
					return fmt.Errorf("%s: document %d: PortMux %q is declared twice; each PortMux must have its own name",
						path, n, strings.TrimPrefix(pm.Namespace+"/"+pm.Name, "/"))
				}
			}
			in.PortMuxes = append(in.PortMuxes, pm)
		case head.Kind == "Secret" && head.APIVersion == "v1":
			var s corev1.Secret
			if err := yaml.UnmarshalStrict(doc, &s); err != nil {
				return fmt.Errorf("%s: document %d (Secret): %w", path, n, err)
			}
			in.Secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = &s
		default:
			return fmt.Errorf("%s: document %d: kind %q (%s) is not served here; use PortMux (%s) and Secret (v1)",
				path, n, head.Kind, head.APIVersion, v1alpha1.GroupVersion)
		}
	}
}

func bufioReader(data []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(data)) }
