// Command fakegpu is a TEST DOUBLE of the NVIDIA device plugin for the dev cluster's real node.
//
// It advertises --count devices of the resource --resource (nvidia.com/gpu) to the kubelet through the
// kubelet's real device-plugin API (v1beta1, gRPC over unix sockets), so that a pod asking for GPUs goes
// through the same scheduling, kubelet admission and container start as on a GPU host. No device exists:
// Allocate only hands the container the environment a real plugin would (NVIDIA_VISIBLE_DEVICES) plus
// GPU_PROVIDER_FAKE_GPU=1 so a workload can tell. When the kubelet restarts (it deletes every socket in the
// plugin directory) the plugin serves and registers again.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-stream.Context().Done() // the set never changes; the kubelet closes the stream when it goes away
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	known := map[string]bool{}
	for _, d := range p.devices {
		known[d.ID] = true
	}
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !known[id] {
				return nil, fmt.Errorf("unknown device %q", id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{
				"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ","),
				"GPU_PROVIDER_FAKE_GPU":  "1",
			},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on the plugin socket and registers with the kubelet; it returns the server to stop.
func serve(p *plugin, dir, name, resource string) (*grpc.Server, error) {
	sock := filepath.Join(dir, name)
	_ = os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     name,
		ResourceName: resource,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("registering with the kubelet: %w", err)
	}
	return srv, nil
}

func main() {
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	resource := flag.String("resource", "nvidia.com/gpu", "the extended resource to advertise")
	count := flag.Int("count", 2, "how many devices to advertise")
	prefix := flag.String("id-prefix", "GPU-fake", "device IDs are PREFIX-N")
	flag.Parse()
	if *count < 1 || *count > 256 {
		log.Fatalf("--count must be 1..256, got %d", *count)
	}
	p := &plugin{}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("%s-%d", *prefix, i), Health: pluginapi.Healthy})
	}
	name := "gpu-provider-fakegpu.sock"
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	var srv *grpc.Server
	for {
		if srv == nil {
			s, err := serve(p, *dir, name, *resource)
			if err != nil {
				log.Printf("fakegpu: %v; retrying", err)
			} else {
				srv = s
				log.Printf("fakegpu: registered %d x %s (a test double: there is no device)", *count, *resource)
			}
		} else if _, err := os.Stat(filepath.Join(*dir, name)); err != nil {
			log.Printf("fakegpu: socket gone (kubelet restarted); registering again")
			srv.Stop()
			srv = nil
			continue
		}
		select {
		case <-sigs:
			if srv != nil {
				srv.Stop()
			}
			_ = os.Remove(filepath.Join(*dir, name))
			return
		case <-time.After(time.Second):
		}
	}
}
