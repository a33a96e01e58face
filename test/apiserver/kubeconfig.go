package apiserver

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// WriteAdminKubeconfig adds a user named name, in group system:masters, to
// env and writes a kubeconfig with its client certificate to path.
// envtest keeps its own user's credentials in memory only; what runs in
// another process (the manager, kubectl, helm, a developer's shell) needs
// them in a file. The file is written whole or not at all (see
// writeFileAtomic), and mode 0600: it holds a client key.
func WriteAdminKubeconfig(env *envtest.Environment, name, path string) (*envtest.AuthenticatedUser, error) {
	admin, err := env.AddUser(envtest.User{Name: name, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("add the admin user %s: %w", name, err)
	}
	data, err := admin.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("render the kubeconfig of %s: %w", name, err)
	}
	if err := writeFileAtomic(path, data); err != nil {
		return nil, fmt.Errorf("write the kubeconfig: %w", err)
	}
	return admin, nil
}

// writeFileAtomic writes data to path (mode 0600) through a temporary file
// in the same directory, so a reader sees either nothing or the whole file.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".kubeconfig-*")
	if err != nil {
		return err
	}
	// After the rename there is nothing left to remove.
	defer func() { _ = os.Remove(f.Name()) }()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
