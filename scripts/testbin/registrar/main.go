// Command csi-registrar tells kubelet where a CSI driver's node plugin listens, which is
// the part of node-driver-registrar a test node needs (that project is not served by the
// Go module proxy here). It asks the driver its name over the CSI Identity service, then
// serves kubelet's plugin registration API (k8s.io/kubelet pluginregistration/v1) on
// <registration-dir>/<driver>-reg.sock, where kubelet's plugin watcher finds it.
//
// It accepts node-driver-registrar's two flags, so a DaemonSet written for the real one
// runs unchanged. Not implemented: /healthz and --mode=kubelet-registration-probe.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registrar struct {
	registration.UnimplementedRegistrationServer
	driver   string
	endpoint string
}

// GetInfo is kubelet's first call: which kind of plugin this is and where it listens.
func (r *registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              r.driver,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus is kubelet's answer; a refusal ends the process, as a
// registrar that kubelet refused can do nothing more.
func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	log.Printf("kubelet registration status: registered=%v error=%q", s.PluginRegistered, s.Error)
	if !s.PluginRegistered {
		os.Exit(1)
	}
	return &registration.RegistrationStatusResponse{}, nil
}

// driverName asks the driver for its name, retrying while its socket is not up yet.
func driverName(address string) string {
	target := "unix://" + strings.TrimPrefix(address, "unix://")
	for {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			info, callErr := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
			cancel()
			conn.Close()
			if callErr == nil {
				return info.GetName()
			}
			err = callErr
		}
		log.Printf("waiting for the driver at %s: %v", address, err)
		time.Sleep(time.Second)
	}
}

func main() {
	csiAddress := flag.String("csi-address", "/csi/csi.sock", "the driver's socket, as this container sees it")
	kubeletPath := flag.String("kubelet-registration-path", "", "the driver's socket, as kubelet sees it on the node")
	registrationDir := flag.String("plugin-registration-path", "/registration", "kubelet's plugin registration directory, as this container sees it")
	flag.Parse()
	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}
	driver := driverName(*csiAddress)
	socket := filepath.Join(*registrationDir, driver+"-reg.sock")
	if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
		log.Fatalf("removing a stale %s: %v", socket, err)
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("listening on %s: %v", socket, err)
	}
	server := grpc.NewServer()
	registration.RegisterRegistrationServer(server, &registrar{driver: driver, endpoint: *kubeletPath})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		server.Stop()
		os.Remove(socket)
		os.Exit(0)
	}()
	log.Printf("registering %s (node socket %s) on %s", driver, *kubeletPath, socket)
	if err := server.Serve(listener); err != nil {
		log.Fatal(err)
	}
}
