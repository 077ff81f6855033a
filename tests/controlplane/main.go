// Command controlplane runs a real, minimal Kubernetes control plane on loopback for the
// opsec-operator integration tests: etcd embedded in this process, and the real kube-apiserver
// and kube-controller-manager (built from k8s.io/kubernetes) as child processes that die with it.
//
// It writes an admin kubeconfig (client certificate in group system:masters) into -dir and a file
// named "ready" once the API server answers /readyz, and stops everything on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

type options struct {
	dir           string
	binDir        string
	apiserverPort int
	etcdPort      int
	kcm           bool
}

func main() {
	var o options
	flag.StringVar(&o.dir, "dir", "", "data directory (created; must be empty or absent for a fresh start)")
	flag.StringVar(&o.binDir, "bin", "", "directory holding kube-apiserver and kube-controller-manager")
	flag.IntVar(&o.apiserverPort, "apiserver-port", 16443, "secure port of kube-apiserver on 127.0.0.1")
	flag.IntVar(&o.etcdPort, "etcd-port", 12379, "client port of etcd on 127.0.0.1 (peer port is this + 1)")
	flag.BoolVar(&o.kcm, "controller-manager", true, "also run kube-controller-manager")
	flag.Parse()
	if o.dir == "" || o.binDir == "" {
		log.Fatal("controlplane: -dir and -bin are required")
	}
	if err := run(o); err != nil {
		log.Fatalf("controlplane: %v", err)
	}
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, "ready"))
	p, err := writePKI(dir)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	etcd, err := startEtcd(dir, o.etcdPort)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	log.Printf("etcd ready on 127.0.0.1:%d", o.etcdPort)

	server := fmt.Sprintf("https://127.0.0.1:%d", o.apiserverPort)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, p); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}

	children := []*exec.Cmd{}
	defer func() {
		for _, c := range children {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range children {
			_ = c.Wait()
		}
	}()
	exited := make(chan error, 2)

	apiserverArgs := []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", o.etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(o.apiserverPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "serving.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC",
		"--enable-priority-and-fairness=false",
		"--storage-backend=etcd3",
		// The endpoint reconciler refuses loopback addresses; a test control plane needs none.
		"--endpoint-reconciler-type=none",
		"--v=0",
	}
	apiserverBin := filepath.Join(o.binDir, "kube-apiserver")
	apiserver, err := startProc(dir, apiserverBin, apiserverArgs...)
	if err != nil {
		return err
	}
	defer func() {
		_ = apiserver.cmd.Process.Signal(syscall.SIGTERM)
		<-apiserver.done
	}()

	if err := waitReady(ctx, server, p, exited); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	log.Printf("kube-apiserver ready at %s", server)

	if o.kcm {
		kcm, err := startChild(ctx, dir, filepath.Join(o.binDir, "kube-controller-manager"), exited,
			"--kubeconfig="+kubeconfig,
			"--authentication-kubeconfig="+kubeconfig,
			"--authorization-kubeconfig="+kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=0",
			"--leader-elect=false",
			"--service-account-private-key-file="+filepath.Join(dir, "sa.key"),
			"--root-ca-file="+filepath.Join(dir, "ca.crt"),
			"--cluster-signing-cert-file="+filepath.Join(dir, "ca.crt"),
			"--cluster-signing-key-file="+filepath.Join(dir, "ca.key"),
			"--use-service-account-credentials=false",
			"--controllers=*",
			"--v=0",
		)
		if err != nil {
			return err
		}
		children = append(children, kcm)
		log.Printf("kube-controller-manager started")
	}

	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(server+"\n"), 0o600); err != nil {
		return err
	}
	log.Printf("control plane ready; kubeconfig %s", kubeconfig)

	// SIGUSR1 restarts kube-apiserver (tests of an API server that goes away and comes back).
	restart := make(chan os.Signal, 1)
	signal.Notify(restart, syscall.SIGUSR1)
	for {
		select {
		case <-ctx.Done():
			log.Printf("stopping")
			return nil
		case err := <-exited:
			return fmt.Errorf("a component exited: %w", err)
		case err := <-apiserver.done:
			apiserver.done <- err
			return fmt.Errorf("a component exited: kube-apiserver: %v (see %s)", err, filepath.Join(dir, "kube-apiserver.log"))
		case err := <-etcd.Err():
			return fmt.Errorf("etcd failed: %w", err)
		case <-restart:
			log.Printf("restarting kube-apiserver")
			_ = apiserver.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-apiserver.done:
				apiserver.done <- err
			case <-time.After(30 * time.Second):
				_ = apiserver.cmd.Process.Kill()
				apiserver.done <- <-apiserver.done
			}
			if apiserver, err = startProc(dir, apiserverBin, apiserverArgs...); err != nil {
				return err
			}
			if err := waitReady(ctx, server, p, exited); err != nil {
				return fmt.Errorf("kube-apiserver after a restart: %w", err)
			}
			log.Printf("kube-apiserver ready again at %s", server)
		}
	}
}

// proc is a child whose exit is reported on done (buffered: the exit is kept for whoever
// reads it, and put back by a reader that only looks).
type proc struct {
	cmd  *exec.Cmd
	done chan error
}

// startProc starts a child, its output in DIR/<name>.log and its exit on its own channel.
func startProc(dir, bin string, args ...string) (*proc, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, filepath.Base(bin)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// startChild starts a component whose output goes to <dir>/<name>.log. Pdeathsig makes the kernel
// kill it if this process dies without a chance to clean up, so no component is ever left behind.
func startChild(ctx context.Context, dir, bin string, exited chan<- error, args ...string) (*exec.Cmd, error) {
	p, err := startProc(dir, bin, args...)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(bin)
	go func() {
		err := <-p.done
		if ctx.Err() == nil {
			exited <- fmt.Errorf("%s: %v (see %s.log)", name, err, filepath.Join(dir, name))
		}
	}()
	return p.cmd, nil
}

func startEtcd(dir string, port int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "opsec-test"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port+1)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.QuotaBackendBytes = 8 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("not ready after 60s")
	}
}

func waitReady(ctx context.Context, server string, p *pki, exited <-chan error) error {
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      p.pool,
			Certificates: []tls.Certificate{p.admin},
		}},
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return err
		case <-time.After(250 * time.Millisecond):
		}
		resp, err := client.Get(server + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return errors.New("not ready after 3m")
}

type pki struct {
	caPEM, adminCertPEM, adminKeyPEM []byte
	pool                             *x509.CertPool
	admin                            tls.Certificate
}

// writePKI makes a CA, a serving certificate for 127.0.0.1, an admin client certificate in
// system:masters and the service-account signing key pair.
func writePKI(dir string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "opsec-test-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)

	issue := func(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      subject,
			NotBefore:    now,
			NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
	}
	servingCert, servingKey, err := issue(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return nil, err
	}
	adminCert, adminKey, err := issue(3, pkix.Name{CommonName: "opsec-admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":      caPEM,
		"ca.key":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		"serving.crt": servingCert,
		"serving.key": servingKey,
		"admin.crt":   adminCert,
		"admin.key":   adminKey,
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	admin, err := tls.X509KeyPair(adminCert, adminKey)
	if err != nil {
		return nil, err
	}
	return &pki{caPEM: caPEM, adminCertPEM: adminCert, adminKeyPEM: adminKey, pool: pool, admin: admin}, nil
}

func writeKubeconfig(path, server string, p *pki) error {
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: opsec-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: opsec-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: opsec-test
  context: {cluster: opsec-test, user: opsec-admin, namespace: default}
current-context: opsec-test
`, server, b64(p.caPEM), b64(p.adminCertPEM), b64(p.adminKeyPEM))
	return os.WriteFile(path, []byte(cfg), 0o600)
}
