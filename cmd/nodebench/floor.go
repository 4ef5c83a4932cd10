package main

// The floor: -tool -floor runs the rows against a member that does
// nothing but answer, in place of noded. It speaks the etcd v3 gRPC API
// with grpc-go as noded does, and answers every KV, lease and status call
// at once with an empty success: no raft, no log, no store, no fsync. On a
// machine whose cores the load tool shares, its rate against etcd's is the
// most any member that speaks gRPC can reach here, so a target above it is
// out of reach of noded's design, whatever noded does inside.
//
// nodebench runs as the floor member when started under the name
// floorBinaryName (a symbolic link to itself, made in the run's
// directory), with a member's flags, of which it reads only
// --listen-client-urls.

import (
	"context"
	"fmt"
	"io"
	stdnet "net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

const floorBinaryName = "nodebench-floor"

// floorIdentity is what every floor answer's header says.
const (
	floorClusterID = 0xf1
	floorMemberID  = 0xf100
	floorRevision  = 2
	floorTerm      = 2
	floorLeaseTTL  = 60
)

// isFloorMember reports whether this process was started as a floor
// member.
func isFloorMember() bool { return filepath.Base(os.Args[0]) == floorBinaryName }

// floorBinary makes the link that starts nodebench as a floor member, in
// dir, and returns its path.
func floorBinary(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	link := filepath.Join(dir, floorBinaryName)
	_ = os.Remove(link)
	if err := os.Symlink(self, link); err != nil {
		return "", err
	}
	return link, nil
}

// runFloorMember serves the floor on every --listen-client-urls URL until
// the process is killed.
func runFloorMember(args []string) error {
	var urls []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--listen-client-urls="); ok {
			urls = append(urls, strings.Split(v, ",")...)
		}
	}
	if len(urls) == 0 {
		return fmt.Errorf("floor member: no --listen-client-urls")
	}
	srv := grpc.NewServer()
	pb.RegisterKVServer(srv, floorKV{})
	pb.RegisterLeaseServer(srv, floorLease{})
	pb.RegisterMaintenanceServer(srv, floorMaintenance{})
	errs := make(chan error, len(urls))
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("floor member: %w", err)
		}
		l, err := stdnet.Listen("tcp", u.Host)
		if err != nil {
			return fmt.Errorf("floor member: %w", err)
		}
		go func() { errs <- srv.Serve(l) }()
	}
	return <-errs
}

func floorHeader() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: floorClusterID, MemberId: floorMemberID, Revision: floorRevision, RaftTerm: floorTerm}
}

type floorKV struct{ pb.UnimplementedKVServer }

func (floorKV) Range(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
	return &pb.RangeResponse{Header: floorHeader()}, nil
}

func (floorKV) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	return &pb.PutResponse{Header: floorHeader()}, nil
}

func (floorKV) DeleteRange(context.Context, *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return &pb.DeleteRangeResponse{Header: floorHeader()}, nil
}

// Txn succeeds with one empty response of the right kind per success op,
// each with its header, which is what a client reading the responses
// expects (an STM reads the revision of each range's header).
func (floorKV) Txn(_ context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	resp := &pb.TxnResponse{Header: floorHeader(), Succeeded: true}
	for _, op := range r.GetSuccess() {
		switch {
		case op.GetRequestPut() != nil:
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{Header: floorHeader()}}})
		case op.GetRequestDeleteRange() != nil:
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Header: floorHeader()}}})
		case op.GetRequestTxn() != nil:
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{Header: floorHeader(), Succeeded: true}}})
		default:
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Header: floorHeader()}}})
		}
	}
	return resp, nil
}

func (floorKV) Compact(context.Context, *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	return &pb.CompactionResponse{Header: floorHeader()}, nil
}

type floorLease struct{ pb.UnimplementedLeaseServer }

func (floorLease) LeaseGrant(_ context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	id := r.GetID()
	if id == 0 {
		id = 1
	}
	return &pb.LeaseGrantResponse{Header: floorHeader(), ID: id, TTL: max(r.GetTTL(), floorLeaseTTL)}, nil
}

func (floorLease) LeaseRevoke(context.Context, *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return &pb.LeaseRevokeResponse{Header: floorHeader()}, nil
}

func (floorLease) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: floorHeader(), ID: r.GetID(), TTL: floorLeaseTTL}); err != nil {
			return err
		}
	}
}

type floorMaintenance struct {
	pb.UnimplementedMaintenanceServer
}

func (floorMaintenance) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Header: floorHeader(), Version: "floor", Leader: floorMemberID, RaftTerm: floorTerm}, nil
}
