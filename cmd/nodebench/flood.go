package main

// -flood: instead of the rows, both sides face the floods a careless or
// hostile client makes, one side after the other in one run, with the
// same numbers: idle connections on member 0's client port, idle
// connections on members 0 and 2's peer ports while member 1 restarts
// behind them, and (noded only: it speaks noded's peer protocol) a forged
// snapshot stream. Beside each, a client of member 0 writes and reads
// back; the figures are what member 0's process holds, how many pairs the
// client did, and how long a new client or the restarted member took.

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/cmd/internal/flood"
	"github.com/noded/noded/cmd/internal/memberproc"
)

// floodFigures are one side's results, by figure name.
type floodFigures map[string]string

// floodRows name the figures in the order printed.
var floodRows = []string{
	"idle: resident MiB",
	"idle: sockets held",
	"idle: write+read pairs/s",
	"client flood: idle connections open",
	"client flood: closed by the member",
	"client flood: sockets held",
	"client flood: resident MiB",
	"client flood: write+read pairs/s",
	"client flood: a new client's first read, ms",
	"peer flood: idle connections open",
	"peer flood: closed by the member",
	"peer flood: sockets held",
	"peer flood: resident MiB",
	"peer flood: write+read pairs/s",
	"peer flood: restarted member serving after, s",
	"forged snapshot: MiB streamed",
	"forged snapshot: resident MiB before / max during",
	"forged snapshot: the member's answer",
}

func hostPort(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Host
}

// runFloods measures each side and prints the figures side by side.
func runFloods(o options, sides []*side, out io.Writer) error {
	results := make([]floodFigures, len(sides))
	for i, s := range sides {
		if s.cluster == nil || len(s.cluster.procs) < 3 {
			return fmt.Errorf("-flood needs clusters of 3 members that nodebench starts (-members 3)")
		}
		progress("floods on %s", s.label)
		fig, err := floodSide(o, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.label, err)
		}
		results[i] = fig
	}
	for _, s := range sides {
		fmt.Fprintf(out, "%s: %s (version %s), %d members\n", s.label, s.binary, s.version, len(s.endpoints))
	}
	fmt.Fprintf(out, "%d idle connections on member 0's client port; %d on members 0 and 2's peer ports each, kept open (redialled when closed) for %v per phase; member 0 measured\n\n",
		o.floodClientConns, o.floodPeerConns, o.floodHold)
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
	tableHeader(tw, "figure", sides[0].label, sides[1].label)
	for _, name := range floodRows {
		tableRow(tw, []string{name, orNA(results[0][name]), orNA(results[1][name])})
	}
	return tw.Flush()
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%d", b>>20) }

// floodSide runs the phases on one side.
func floodSide(o options, s *side) (floodFigures, error) {
	fig := floodFigures{}
	c := s.cluster
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.endpoints[:1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	pid := func() int { return c.procs[0].Process.Pid }

	// measure runs the read-writer for the hold time and records the
	// process figures at its end under prefix.
	measure := func(prefix string) error {
		rw := flood.StartReadWriter(cli, "flood/"+s.label+"/"+strings.Fields(prefix)[0]+"/", requestTimeout)
		time.Sleep(o.floodHold)
		p, err := flood.ReadProcess(pid())
		acked := rw.Stop()
		if err != nil {
			return err
		}
		fig[prefix+": resident MiB"] = mib(p.RSSBytes)
		fig[prefix+": sockets held"] = fmt.Sprint(p.Sockets)
		fig[prefix+": write+read pairs/s"] = fmt.Sprintf("%.0f", float64(len(acked))/o.floodHold.Seconds())
		return nil
	}
	floodStats := func(prefix string, floods ...*flood.Idle) {
		var open int
		var closed int64
		for _, f := range floods {
			st := f.Stats()
			open += st.Open
			closed += st.ClosedByMember
		}
		fig[prefix+": idle connections open"] = fmt.Sprint(open)
		fig[prefix+": closed by the member"] = fmt.Sprint(closed)
	}

	if err := measure("idle"); err != nil {
		return nil, err
	}

	progress("%s: client flood of %d", s.label, o.floodClientConns)
	clientFlood := flood.StartIdle(hostPort(s.endpoints[0]), o.floodClientConns)
	began := time.Now()
	if err := memberproc.WaitReady(s.endpoints[0], "nodebench-flood-probe", readyTimeout, nil, nil); err != nil {
		fig["client flood: a new client's first read, ms"] = "failed: " + err.Error()
	} else {
		fig["client flood: a new client's first read, ms"] = fmt.Sprintf("%.0f", float64(time.Since(began).Microseconds())/1000)
	}
	err = measure("client flood")
	floodStats("client flood", clientFlood)
	clientFlood.Stop()
	if err != nil {
		return nil, err
	}

	progress("%s: peer floods of %d", s.label, o.floodPeerConns)
	peerFloods := []*flood.Idle{flood.StartIdle(hostPort(c.peerURLs[0]), o.floodPeerConns), flood.StartIdle(hostPort(c.peerURLs[2]), o.floodPeerConns)}
	c.kill(1)
	if err := c.startMember(1); err != nil {
		return nil, err
	}
	began = time.Now()
	if err := memberproc.WaitReady(s.endpoints[1], "nodebench-flood-probe", readyTimeout, nil, nil); err != nil {
		fig["peer flood: restarted member serving after, s"] = "failed: " + err.Error()
	} else {
		fig["peer flood: restarted member serving after, s"] = fmt.Sprintf("%.1f", time.Since(began).Seconds())
	}
	err = measure("peer flood")
	floodStats("peer flood", peerFloods...)
	for _, f := range peerFloods {
		f.Stop()
	}
	if err != nil {
		return nil, err
	}

	if s.label == "noded" {
		if err := forgedSnapshot(o, s, cli, pid(), fig); err != nil {
			return nil, err
		}
	}
	return fig, nil
}

// forgedSnapshot streams a forged snapshot of o.floodSnapshotMiB to member
// 0 and records its resident memory meanwhile.
func forgedSnapshot(o options, s *side, cli *clientv3.Client, pid int, fig floodFigures) error {
	ctx, cancel := newRequestContext()
	defer cancel()
	members, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	var to, from uint64
	for _, m := range members.Members {
		if len(m.PeerURLs) > 0 && m.PeerURLs[0] == s.cluster.peerURLs[0] {
			to = m.ID
		} else {
			from = m.ID
		}
	}
	before, err := flood.ReadProcess(pid)
	if err != nil {
		return err
	}
	maxRSS := before.RSSBytes
	size := uint64(o.floodSnapshotMiB) << 20
	forged := flood.Forged{
		PeerAddr: hostPort(s.cluster.peerURLs[0]), ClusterID: members.Header.ClusterId, From: from, To: to,
		AnnounceBytes: size, SendBytes: size,
		OnProgress: func(sent uint64) {
			if sent%(8<<20) == 0 {
				if p, err := flood.ReadProcess(pid); err == nil {
					maxRSS = max(maxRSS, p.RSSBytes)
				}
			}
		},
	}
	progress("%s: a forged snapshot of %d MiB", s.label, o.floodSnapshotMiB)
	reason, err := forged.Send()
	fig["forged snapshot: MiB streamed"] = fmt.Sprint(o.floodSnapshotMiB)
	fig["forged snapshot: resident MiB before / max during"] = mib(before.RSSBytes) + " / " + mib(maxRSS)
	answer := reason
	if err != nil {
		answer = strings.TrimSpace(answer + " (" + err.Error() + ")")
	}
	if len(answer) > 60 {
		answer = answer[:60] + "..."
	}
	fig["forged snapshot: the member's answer"] = answer
	return nil
}
