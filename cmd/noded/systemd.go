package main

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/noded/noded/server"
)

// systemd's notify protocol (Type=notify): READY=1 on $NOTIFY_SOCKET once
// the member serves clients, STOPPING=1 when it begins to stop, and
// WATCHDOG=1 at half of $WATCHDOG_USEC while the member's loop answers.
// Without $NOTIFY_SOCKET every call is a no-op.

// watchdogProbeMax bounds one liveness probe of the member loop.
const watchdogProbeMax = 5 * time.Second

// notifySystemd tells systemd the member is ready, once it is, and then
// keeps its watchdog fed until stop is closed.
func notifySystemd(lg *zap.Logger, m *server.Member, stop <-chan struct{}) {
	select {
	case <-m.Ready():
	case <-stop:
		return
	}
	lg.Info("notifying init daemon")
	if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		lg.Error("failed to notify systemd for readiness", zap.Error(err))
	} else if sent {
		lg.Info("successfully notified init daemon")
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		lg.Warn("systemd watchdog: bad WATCHDOG_USEC", zap.Error(err))
		return
	}
	if interval <= 0 {
		return
	}
	ticker := time.NewTicker(interval / 2)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			ctx, cancel := context.WithTimeout(context.Background(), min(watchdogProbeMax, interval/2))
			err := m.Alive(ctx)
			cancel()
			if err != nil {
				// A loop that does not answer is not fed to the watchdog:
				// systemd restarts the member after WATCHDOG_USEC.
				lg.Warn("member loop did not answer; not feeding the systemd watchdog", zap.Error(err))
				continue
			}
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}

// notifyStopping tells systemd the member is stopping.
func notifyStopping() {
	daemon.SdNotify(false, daemon.SdNotifyStopping)
}
