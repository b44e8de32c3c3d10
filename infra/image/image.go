// Package image writes quiccast's container image as an OCI image layout
// (a directory: oci-layout, index.json, blobs/sha256/…) with no container
// daemon and no builder: one layer holding the static binary, the
// nonroot user (65532, as distroless's) and the CA certificates, and a
// config that runs quiccast as that user. It is the Dockerfile's image
// without its base: this machine reaches no container registry, so the
// distroless base cannot be pulled (see infra/README.md). Load it with
// `skopeo copy oci:DIR:TAG docker-daemon:quiccast:TAG`, `podman pull oci:DIR:TAG`,
// or push it with `skopeo copy oci:DIR:TAG docker://REGISTRY/quiccast:TAG`.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Media types of the OCI image specification v1.1.
const (
	MediaIndex    = "application/vnd.oci.image.index.v1+json"
	MediaManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaConfig   = "application/vnd.oci.image.config.v1+json"
	MediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// The image's user: distroless's nonroot.
const (
	UID  = 65532
	Home = "/home/nonroot"
)

// Options describe the image.
type Options struct {
	Binary  string    // a static linux binary of quiccast for Arch
	Arch    string    // amd64 or arm64
	Version string    // the image's version label and ref name
	CACerts string    // a PEM bundle; default the machine's
	Created time.Time // the layer's file times and the config's date (same input, same digest)
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is a descriptor's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Write writes the image into dir (an OCI image layout, created or added
// to) and returns its manifest's descriptor.
func Write(dir string, o Options) (Descriptor, error) {
	if o.Arch != "amd64" && o.Arch != "arm64" {
		return Descriptor{}, fmt.Errorf("image: unsupported architecture %q", o.Arch)
	}
	if o.CACerts == "" {
		o.CACerts = "/etc/ssl/certs/ca-certificates.crt"
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return Descriptor{}, err
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return Descriptor{}, fmt.Errorf("image: CA certificates: %w", err)
	}
	created := o.Created.UTC().Truncate(time.Second)
	layer, diffID, err := layerTar(created, bin, certs)
	if err != nil {
		return Descriptor{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return Descriptor{}, err
	}
	put := func(media string, b []byte) (Descriptor, error) {
		sum := sha256.Sum256(b)
		d := Descriptor{MediaType: media, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
		return d, os.WriteFile(filepath.Join(dir, "blobs", "sha256", hex.EncodeToString(sum[:])), b, 0o644)
	}
	layerDesc, err := put(MediaLayer, layer)
	if err != nil {
		return Descriptor{}, err
	}
	cfg := map[string]any{
		"created":      created.Format(time.RFC3339),
		"architecture": o.Arch,
		"os":           "linux",
		"config": map[string]any{
			"User":       fmt.Sprintf("%d:%d", UID, UID),
			"Entrypoint": []string{"/usr/local/bin/quiccast"},
			"Cmd":        []string{"version"},
			"WorkingDir": Home,
			"Env":        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "QC_EDGE_ACME_DIR=" + Home + "/acme"},
			// edge: HTTP(S) on TCP and HTTP/3 on UDP; origin: HTTP 7000,
			// relay 7001/udp, RTMP 1935 (as the Dockerfile).
			"ExposedPorts": map[string]struct{}{"8080/tcp": {}, "8080/udp": {}, "7000/tcp": {}, "7001/udp": {}, "1935/tcp": {}},
			"Volumes":      map[string]struct{}{Home + "/acme": {}},
			"Labels": map[string]string{
				"org.opencontainers.image.title":   "quiccast",
				"org.opencontainers.image.version": o.Version,
				"org.opencontainers.image.source":  "https://github.com/quiccast/quiccast",
			},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]string{{"created": created.Format(time.RFC3339), "created_by": "quiccast infra/image (no daemon): the static binary, nonroot user, CA certificates"}},
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return Descriptor{}, err
	}
	cfgDesc, err := put(MediaConfig, cb)
	if err != nil {
		return Descriptor{}, err
	}
	mb, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaManifest,
		"config":        cfgDesc,
		"layers":        []Descriptor{layerDesc},
	})
	if err != nil {
		return Descriptor{}, err
	}
	man, err := put(MediaManifest, mb)
	if err != nil {
		return Descriptor{}, err
	}
	man.Platform = &Platform{Architecture: o.Arch, OS: "linux"}
	man.Annotations = map[string]string{"org.opencontainers.image.ref.name": o.Version}
	// index.json: this image, replacing one of the same name and
	// platform.
	var idx struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []Descriptor `json:"manifests"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "index.json")); err == nil {
		if err := json.Unmarshal(b, &idx); err != nil {
			return Descriptor{}, fmt.Errorf("image: %s/index.json: %w", dir, err)
		}
	}
	idx.SchemaVersion, idx.MediaType = 2, MediaIndex
	var keep []Descriptor
	for _, m := range idx.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] == o.Version && m.Platform != nil && *m.Platform == *man.Platform {
			continue
		}
		keep = append(keep, m)
	}
	idx.Manifests = append(keep, man)
	ib, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return Descriptor{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return Descriptor{}, err
	}
	return man, os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644)
}

// layerTar returns the gzipped layer and the digest of its tar (the
// config's diff_id).
func layerTar(mtime time.Time, bin, certs []byte) ([]byte, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	type entry struct {
		name  string
		mode  int64
		uid   int
		body  []byte
		isDir bool
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", UID, UID, Home)
	group := fmt.Sprintf("root:x:0:\nnobody:x:65534:\nnonroot:x:%d:\n", UID)
	entries := []entry{
		{name: "etc/", mode: 0o755, isDir: true},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755, isDir: true},
		{name: "etc/ssl/certs/", mode: 0o755, isDir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: certs},
		{name: "home/", mode: 0o755, isDir: true},
		{name: "home/nonroot/", mode: 0o700, uid: UID, isDir: true},
		{name: "home/nonroot/acme/", mode: 0o700, uid: UID, isDir: true},
		{name: "tmp/", mode: 0o1777, isDir: true},
		{name: "usr/", mode: 0o755, isDir: true},
		{name: "usr/local/", mode: 0o755, isDir: true},
		{name: "usr/local/bin/", mode: 0o755, isDir: true},
		{name: "usr/local/bin/quiccast", mode: 0o755, body: bin},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		if e.isDir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.ModTime = time.Time{} // no time in the header: same input, same digest
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(sum[:]), nil
}
